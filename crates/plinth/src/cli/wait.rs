//! Following an operation to its end: long-polls `GET /v1/operations/{id}?wait=…` and
//! shows progress on stderr — a spinner line on a terminal, one line per change
//! otherwise — then the final status (and, for instance actions, the instance's state).

use anyhow::{Result, anyhow};
use plinth_api::{Operation, OperationStatus, OperationWait};
use plinth_client::{Client, Doc};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const SPINNER: &[char] = &['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

fn line(op: &Operation) -> String {
    let moving = op.items.iter().filter(|i| i.status == "moving").count();
    let mut s = format!("{} {}: {} ({}/{})", op.kind, op.target, op.message, op.done, op.total);
    if moving > 0 {
        s.push_str(&format!(", {moving} moving"));
    }
    s
}

/// Waits for operation `id` to be final (at most `timeout`) and returns it. Fails when it
/// did not succeed, with its error.
pub async fn wait(c: &Client, id: &str, timeout: Duration) -> Result<Doc<Operation>> {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last = String::new();
    let mut tick = 0usize;
    loop {
        let poll = if tty { "1s" } else { "10s" };
        let op = c.operation(id, &OperationWait { wait: Some(poll.to_string()) }).await?;
        let status = op.status;
        let now = line(&op);
        if tty {
            tick += 1;
            eprint!("\r\x1b[2K{} {now}", SPINNER[tick % SPINNER.len()]);
            let _ = std::io::stderr().flush();
        } else if now != last {
            eprintln!("{now}");
        }
        last = now;
        if status.is_final() {
            if tty {
                eprintln!();
            }
            for item in op.items.iter().filter(|i| i.status != "done") {
                eprintln!("  {}: {} {}", item.target, item.status, item.detail.as_deref().unwrap_or(""));
            }
            if status == OperationStatus::Succeeded {
                eprintln!("{id}: succeeded in {:.1} s", started.elapsed().as_secs_f64());
                return Ok(op);
            }
            let (detail, code) = op.error.as_ref().map(|e| (e.detail.as_str(), e.code.as_str())).unwrap_or_default();
            return Err(anyhow!("{id} {}: {detail} ({code})", status.as_str()));
        }
        if started.elapsed() > timeout {
            if tty {
                eprintln!();
            }
            return Err(anyhow!(
                "{id} is still {} after {} s; follow it with `plinth operation wait {id}`",
                status.as_str(),
                timeout.as_secs()
            ));
        }
    }
}
