//! The host lifecycle (DESIGN.md §5) as a total function from (state, event) to the next
//! state or a typed refusal.

use plinth_api::HostState;
use thiserror::Error;

/// Things that happen to a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostEvent {
    /// The agent enrolled and reported its first inventory.
    AgentReady,
    Cordon,
    Uncordon,
    Drain,
    /// The drain moved everything off.
    DrainFinished,
    /// The operator aborted a drain.
    DrainAborted,
    /// The operator puts a drained host into maintenance.
    Maintenance,
    /// Heartbeats stopped past the window.
    HeartbeatLost,
    /// Heartbeats came back.
    HeartbeatRestored,
    /// The operator declares an unreachable host failed.
    DeclareFailed,
    Retire,
    /// Nothing is left on a retiring host.
    RetireFinished,
}

/// A refused transition, naming the state it was refused in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
#[error("cannot {event:?} a host that is {}", state.as_str())]
pub struct InvalidTransition {
    pub state: HostState,
    pub event: HostEvent,
}

/// The next state, or the refusal. Repeating an action already in effect is a no-op success.
pub fn next(state: HostState, event: HostEvent) -> Result<HostState, InvalidTransition> {
    use HostEvent as E;
    use HostState as S;
    let refuse = Err(InvalidTransition { state, event });
    match (state, event) {
        (S::Enrolling, E::AgentReady) => Ok(S::Available),
        (_, E::AgentReady) => Ok(state),
        (S::Available | S::Cordoned, E::Cordon) => Ok(S::Cordoned),
        (S::Cordoned | S::Available, E::Uncordon) => Ok(S::Available),
        (S::Maintenance, E::Uncordon) => Ok(S::Available),
        (S::Available | S::Cordoned | S::Draining, E::Drain) => Ok(S::Draining),
        (S::Draining, E::DrainFinished) => Ok(S::Cordoned),
        (S::Draining, E::DrainAborted) => Ok(S::Cordoned),
        (S::Cordoned | S::Maintenance, E::Maintenance) => Ok(S::Maintenance),
        (S::Retired | S::Failed, E::HeartbeatLost) => Ok(state),
        (S::Enrolling, E::HeartbeatLost) => Ok(state),
        (_, E::HeartbeatLost) => Ok(S::Unreachable),
        (S::Unreachable, E::HeartbeatRestored) => Ok(S::Cordoned),
        (_, E::HeartbeatRestored) => Ok(state),
        (S::Unreachable | S::Failed, E::DeclareFailed) => Ok(S::Failed),
        (S::Retired, E::Retire) => Ok(S::Retired),
        (S::Retiring, E::Retire) => Ok(S::Retiring),
        (S::Enrolling | S::Cordoned | S::Maintenance | S::Failed, E::Retire) => Ok(S::Retiring),
        (S::Retiring, E::RetireFinished) => Ok(S::Retired),
        _ => refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_paths() {
        let s = next(HostState::Enrolling, HostEvent::AgentReady).unwrap();
        assert_eq!(s, HostState::Available);
        let s = next(s, HostEvent::Cordon).unwrap();
        assert_eq!(next(s, HostEvent::Cordon).unwrap(), HostState::Cordoned);
        let s = next(s, HostEvent::Drain).unwrap();
        let s = next(s, HostEvent::DrainFinished).unwrap();
        let s = next(s, HostEvent::Maintenance).unwrap();
        assert_eq!(s, HostState::Maintenance);
        let s = next(s, HostEvent::Retire).unwrap();
        assert_eq!(next(s, HostEvent::RetireFinished).unwrap(), HostState::Retired);
    }

    #[test]
    fn refusals_name_the_state() {
        let e = next(HostState::Available, HostEvent::Maintenance).unwrap_err();
        assert_eq!(e.state, HostState::Available);
        assert!(next(HostState::Available, HostEvent::Retire).is_err());
        assert!(next(HostState::Retired, HostEvent::Uncordon).is_err());
    }
}
