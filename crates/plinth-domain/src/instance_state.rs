//! The instance lifecycle (DESIGN.md §5): the external state derived from the control
//! plane's lifecycle, the desired power state and the agent's last observation, and the
//! actions users may take from each state (a total function with typed refusals).
//!
//! Omicron's instance/VMM split is the model: the control plane owns `lifecycle`, `power`
//! and `spec_generation`; the agent owns observations, each naming the spec generation it
//! reflects. An observation older than the current spec never counts as the truth.

use plinth_api::{InstanceState, Lifecycle, Observation, ObservedState, PowerState};
use thiserror::Error;

/// What `derive` reads.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub lifecycle: Lifecycle,
    /// The in-flight action while `lifecycle` is `Busy` (`reboot`, `resize`, …).
    pub action: Option<&'a str>,
    pub power: PowerState,
    pub spec_generation: i64,
    pub observed: Option<&'a Observation>,
    /// The instance's host stopped reporting (unreachable or failed, not yet recovered).
    pub host_lost: bool,
}

/// The state users see.
pub fn derive(f: Facts<'_>) -> InstanceState {
    use InstanceState as S;
    match f.lifecycle {
        Lifecycle::Deleted => return S::Deleted,
        Lifecycle::Deleting => return S::Deleting,
        Lifecycle::Creating => return S::Creating,
        Lifecycle::Failed => return S::Failed,
        Lifecycle::Busy => {
            return match f.action {
                Some("reboot") => S::Rebooting,
                Some("resize") => S::Resizing,
                Some("rebuild") => S::Rebuilding,
                Some("migrate") => S::Migrating,
                _ => S::Repairing,
            };
        }
        Lifecycle::Active => {}
    }
    if f.host_lost {
        return S::Unknown;
    }
    // An observation of an older spec says nothing about the current intent.
    let seen = f.observed.filter(|o| o.generation >= f.spec_generation).map(|o| o.state);
    match (f.power, seen) {
        (_, Some(ObservedState::Failed)) => S::Failed,
        (_, Some(ObservedState::Crashed)) => S::Crashed,
        (PowerState::Running, Some(ObservedState::Running)) => S::Running,
        (PowerState::Running, _) => S::Starting,
        (PowerState::Stopped | PowerState::Absent, Some(ObservedState::Stopped | ObservedState::Absent)) => S::Stopped,
        (PowerState::Stopped | PowerState::Absent, _) => S::Stopping,
    }
}

/// What users ask of an instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Reboot,
    Resize,
    Rebuild,
    Delete,
}

impl Action {
    /// The action's name, as in the API path.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Reboot => "reboot",
            Action::Resize => "resize",
            Action::Rebuild => "rebuild",
            Action::Delete => "delete",
        }
    }
}

/// Whether an allowed action has anything to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Already in effect: succeed without doing anything.
    NoOp,
    Proceed,
}

/// A refused action, naming the state it was refused in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("cannot {} an instance that is {}{}", action.as_str(), state.as_str(), hint(*state, *action))]
pub struct InvalidTransition {
    pub state: InstanceState,
    pub action: Action,
}

fn hint(state: InstanceState, action: Action) -> &'static str {
    match (state, action) {
        (InstanceState::Running | InstanceState::Starting, Action::Resize | Action::Rebuild) => ": stop it first",
        (InstanceState::Unknown, _) => ": its host is unreachable; an operator must fence it and declare it failed",
        _ => "",
    }
}

/// May `action` be taken in `state`? Repeating an action already in effect (stop on a
/// stopped instance) is a no-op success.
pub fn check(state: InstanceState, action: Action) -> Result<Verdict, InvalidTransition> {
    use Action as A;
    use InstanceState as S;
    let refuse = Err(InvalidTransition { state, action });
    match (action, state) {
        (A::Start, S::Running | S::Starting) => Ok(Verdict::NoOp),
        (A::Start, S::Stopped | S::Stopping | S::Failed | S::Crashed) => Ok(Verdict::Proceed),
        (A::Stop, S::Stopped | S::Stopping) => Ok(Verdict::NoOp),
        (A::Stop, S::Running | S::Starting | S::Failed | S::Crashed) => Ok(Verdict::Proceed),
        (A::Reboot, S::Running) => Ok(Verdict::Proceed),
        (A::Reboot, S::Rebooting) => Ok(Verdict::NoOp),
        (A::Resize | A::Rebuild, S::Stopped) => Ok(Verdict::Proceed),
        (A::Delete, S::Deleting | S::Deleted) => Ok(Verdict::NoOp),
        (A::Delete, S::Running | S::Starting | S::Stopping | S::Stopped | S::Failed | S::Crashed) => {
            Ok(Verdict::Proceed)
        }
        _ => refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn obs(state: ObservedState, generation: i64) -> Observation {
        Observation { state, generation, detail: None, at: Utc::now(), timings: vec![] }
    }

    fn facts(power: PowerState, spec: i64, o: Option<&Observation>) -> Facts<'_> {
        Facts {
            lifecycle: Lifecycle::Active,
            action: None,
            power,
            spec_generation: spec,
            observed: o,
            host_lost: false,
        }
    }

    #[test]
    fn a_stale_observation_never_overrides_a_newer_intent() {
        let o = obs(ObservedState::Running, 3);
        // The user asked to stop (spec 4); the agent's report of spec 3 still says running.
        assert_eq!(derive(facts(PowerState::Stopped, 4, Some(&o))), InstanceState::Stopping);
        let o = obs(ObservedState::Stopped, 4);
        assert_eq!(derive(facts(PowerState::Stopped, 4, Some(&o))), InstanceState::Stopped);
        let o = obs(ObservedState::Stopped, 4);
        assert_eq!(derive(facts(PowerState::Running, 5, Some(&o))), InstanceState::Starting);
    }

    #[test]
    fn lifecycle_and_host_loss_take_precedence() {
        let o = obs(ObservedState::Running, 1);
        let mut f = facts(PowerState::Running, 1, Some(&o));
        assert_eq!(derive(f), InstanceState::Running);
        f.host_lost = true;
        assert_eq!(derive(f), InstanceState::Unknown);
        f.lifecycle = Lifecycle::Deleting;
        assert_eq!(derive(f), InstanceState::Deleting);
        f.lifecycle = Lifecycle::Busy;
        f.action = Some("resize");
        assert_eq!(derive(f), InstanceState::Resizing);
    }

    #[test]
    fn repeated_actions_are_no_ops_and_refusals_name_the_state() {
        assert_eq!(check(InstanceState::Stopped, Action::Stop), Ok(Verdict::NoOp));
        assert_eq!(check(InstanceState::Running, Action::Start), Ok(Verdict::NoOp));
        let e = check(InstanceState::Deleting, Action::Start).unwrap_err();
        assert_eq!(e.state, InstanceState::Deleting);
        assert!(e.to_string().contains("deleting"), "{e}");
        assert!(check(InstanceState::Running, Action::Resize).unwrap_err().to_string().contains("stop it first"));
        assert_eq!(check(InstanceState::Stopped, Action::Resize), Ok(Verdict::Proceed));
    }
}
