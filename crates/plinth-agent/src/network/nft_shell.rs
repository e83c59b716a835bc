//! `nft` kept open in a VPC namespace for the filter's element updates: one `nft -i`
//! child per namespace, fed one batch per line (commands joined by `;`, which `nft` takes
//! as one transaction, exactly as `nft -f`), each followed by a marker line whose syntax
//! error tells where the batch's own error output ends.
//!
//! Why (measured here, 1,100-element tables, `bench/README.md`): a one-shot `nft -f` pays
//! its start and its cache (~7 ms an element add), and one that deletes an element also
//! waits ~10 ms on exit, when closing its netlink socket waits for the kernel to release
//! what the transaction freed (an RCU grace period); a kept `nft` does either in ~1.5 ms.
//! Its cache follows the kernel's ruleset generation, so a table loaded whole by another
//! process meanwhile is seen. Whole-table loads stay one-shot (`nft -f`: multi-line).
//!
//! The child holds its namespace: [`Nft`] drops it (kill and reap) before the namespace
//! goes. It exits by itself when the agent dies (its stdin closes). A kept `nft` that
//! fails in any way is dropped and the batch given to a one-shot `nft -f` (a batch is one
//! transaction: sent twice, the second is refused whole, never applied twice), except
//! after a timeout, when the outcome is unknown and answered as an error.

use super::cmd;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// How long a kept `nft` may take over one batch before it is killed.
const DEADLINE: Duration = Duration::from_secs(30);

/// The largest batch sent to a kept `nft` (one input line); larger ones go one-shot.
const MAX_LINE: usize = 256 << 10;

/// How many `nft` an agent keeps open at most (about 10 MB each at 1,100 NICs, most of
/// it the ruleset's cache): past it, the one used least recently is ended ([`trim`]).
pub const KEEP_AT_MOST: usize = 16;

/// One namespace's `nft`: kept open (when made with [`Nft::kept`]) or one-shot.
#[derive(Default)]
pub struct Nft {
    keep: bool,
    shell: Mutex<Option<Shell>>,
}

/// Ends the kept `nft` of all but the `keep` used most recently among `all`.
pub fn trim<'a>(all: impl Iterator<Item = &'a Nft>, keep: usize) {
    let mut open: Vec<(Instant, &Nft)> = all.filter_map(|n| n.last_used().map(|t| (t, n))).collect();
    if open.len() <= keep {
        return;
    }
    open.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
    for (_, n) in &open[keep..] {
        n.close();
    }
}

impl Nft {
    /// An `nft` kept open after its first batch.
    pub fn kept() -> Nft {
        Nft { keep: true, shell: Mutex::default() }
    }

    /// Loads `batch` (commands one per line) into namespace `ns` as one transaction; a
    /// batch that cannot go on one line (a whole table) or that a kept `nft` cannot take
    /// goes to a one-shot `nft -f`. Answers the error `nft` printed.
    pub fn load(&self, ns: &str, batch: &str) -> Result<(), String> {
        if self.keep
            && let Some(line) = one_line(batch)
        {
            let mut shell = self.shell.lock().unwrap_or_else(|p| p.into_inner());
            if shell.is_none() {
                match Shell::start(ns) {
                    Ok(s) => *shell = Some(s),
                    Err(e) => tracing::warn!(namespace = ns, error = %e, "starting a kept nft; loading one-shot"),
                }
            }
            if let Some(s) = shell.as_mut() {
                match s.run(&line) {
                    Ok(outcome) => return outcome,
                    Err(Broken::Unsent(e)) => {
                        tracing::warn!(namespace = ns, error = %e, "the kept nft failed; loading one-shot");
                        *shell = None;
                    }
                    Err(Broken::Unknown(e)) => {
                        *shell = None;
                        return Err(format!("nft (kept): {e}"));
                    }
                }
            }
        }
        cmd::in_ns(ns, "nft", &["-f", "-"], Some(batch)).map(|_| ())
    }

    /// Ends the kept `nft`, if any (before its namespace goes).
    pub fn close(&self) {
        self.shell.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Whether a kept `nft` runs now.
    pub fn is_open(&self) -> bool {
        self.shell.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// When the kept `nft` last took a batch (`None`: none is kept; or it is busy now).
    fn last_used(&self) -> Option<Instant> {
        self.shell.try_lock().ok()?.as_ref().map(|s| s.used)
    }
}

/// `batch` as one input line (its commands joined by `"; "`), when it can be one: no
/// character the line editor could take for an edit command (`!`, `\`, control
/// characters), no comment (`#`, which would end the line), and not too long.
fn one_line(batch: &str) -> Option<String> {
    if batch.len() > MAX_LINE
        || batch.bytes().any(|b| !(b.is_ascii_graphic() || b == b' ' || b == b'\n') || b"!\\#".contains(&b))
    {
        return None;
    }
    let cmds: Vec<&str> = batch.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    // A command spanning lines (a table's body) cannot be joined.
    if cmds.iter().any(|c| c.matches('{').count() != c.matches('}').count()) {
        return None;
    }
    Some(cmds.join("; "))
}

/// How a kept `nft` broke.
enum Broken {
    /// Before the batch could have been read whole: it was not applied.
    Unsent(String),
    /// After: it may or may not have been applied.
    Unknown(String),
}

/// A running `nft -i` and the lines of its standard error.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    errors: Receiver<String>,
    seq: u64,
    used: Instant,
}

impl Shell {
    fn start(ns: &str) -> Result<Shell, String> {
        let (mut cmd, netns) = cmd::command_in_ns(ns, "nft")?;
        cmd.arg("-i").stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| format!("nft -i: {e}"))?;
        drop(netns);
        let (stdin, stderr) = match (child.stdin.take(), child.stderr.take()) {
            (Some(i), Some(e)) => (i, e),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("nft -i: no pipes".to_owned());
            }
        };
        let (tx, errors) = channel();
        let reader = std::thread::Builder::new().name("nft-shell".to_owned()).spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let shell = Shell { child, stdin, errors, seq: 0, used: Instant::now() };
        reader.map_err(|e| format!("nft -i: reader thread: {e}"))?;
        Ok(shell)
    }

    /// Sends one batch line and waits for its marker: answers the batch's outcome, or how
    /// the shell broke.
    fn run(&mut self, line: &str) -> Result<Result<(), String>, Broken> {
        self.used = Instant::now();
        // Whatever a previous run left unread (a marker's caret line) is not this batch's.
        while self.errors.try_recv().is_ok() {}
        self.seq += 1;
        let marker = format!("plinth-sync-{}", self.seq);
        let input = format!("{line}\n{marker}\n");
        // Nothing is applied before the batch's newline is read: a write that failed on
        // the batch line sent nothing `nft` would run.
        if let Err(e) = self.stdin.write_all(input.as_bytes()).and_then(|()| self.stdin.flush()) {
            return Err(Broken::Unsent(format!("writing: {e}")));
        }
        let deadline = Instant::now() + DEADLINE;
        let mut said: Vec<String> = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.errors.recv_timeout(left) {
                Ok(l) if l == marker => break,
                Ok(l) => said.push(l),
                Err(RecvTimeoutError::Timeout) => return Err(Broken::Unknown(format!("no answer in {DEADLINE:?}"))),
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Broken::Unknown(format!("exited: {}", tail(&said))));
                }
            }
        }
        // The marker's own complaint ("Error: syntax error, …") is the last before its echo.
        if let Some(i) = said.iter().rposition(|l| l.starts_with("Error:")) {
            said.truncate(i);
        }
        // `nft` echoes the line it complains about: the whole batch, here; shortened.
        let said: Vec<String> = said.iter().filter(|l| !is_caret(l)).map(|l| shortened(l, 240)).collect();
        if said.is_empty() { Ok(Ok(())) } else { Ok(Err(format!("nft (kept): {}", said.join("\n")))) }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A line of `^` under the input `nft` complains about (or a marker's, left over).
fn is_caret(l: &str) -> bool {
    let t = l.trim();
    !t.is_empty() && t.bytes().all(|b| b == b'^' || b == b'~')
}

/// `l` cut to `max` characters (marked with `…`).
fn shortened(l: &str, max: usize) -> String {
    match l.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &l[..i]),
        None => l.to_owned(),
    }
}

fn tail(lines: &[String]) -> String {
    lines.iter().rev().take(3).rev().cloned().collect::<Vec<_>>().join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_commands_join_on_one_line_and_table_bodies_do_not() {
        let batch =
            "delete element inet plinth g0_in_tcp_p { 7000 }\nadd element bridge plinth port_mark { \"t1\" : 5 }\n";
        assert_eq!(
            one_line(batch).as_deref(),
            Some("delete element inet plinth g0_in_tcp_p { 7000 }; add element bridge plinth port_mark { \"t1\" : 5 }")
        );
        assert_eq!(one_line("table inet plinth {\n\tchain c {\n\t}\n}\n"), None);
        assert_eq!(one_line("add rule inet plinth c meta mark != 1 accept\n"), None);
        assert_eq!(one_line(&"x".repeat(MAX_LINE + 1)), None);
    }

    #[test]
    fn a_long_echo_is_shortened() {
        assert_eq!(shortened("abcdef", 3), "abc…");
        assert_eq!(shortened("abc", 3), "abc");
    }
}
