//! Following an operation to its end: long-polls `GET /v1/operations/{id}?wait=…` and
//! shows progress on stderr — a spinner line on a terminal, one line per change
//! otherwise — then the final status (and, for instance actions, the instance's state).

use crate::client::Client;
use anyhow::{Result, anyhow};
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const SPINNER: &[char] = &['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

fn line(op: &Value) -> String {
    let done = op["done"].as_u64().unwrap_or(0);
    let total = op["total"].as_u64().unwrap_or(0);
    let moving =
        op["items"].as_array().map(|items| items.iter().filter(|i| i["status"] == "moving").count()).unwrap_or(0);
    let mut s = format!(
        "{} {}: {} ({done}/{total})",
        op["kind"].as_str().unwrap_or("operation"),
        op["target"].as_str().unwrap_or(""),
        op["message"].as_str().unwrap_or("")
    );
    if moving > 0 {
        s.push_str(&format!(", {moving} moving"));
    }
    s
}

/// Waits for operation `id` to be final (at most `timeout`) and returns it. Fails when it
/// did not succeed, with its error.
pub async fn wait(c: &Client, id: &str, timeout: Duration) -> Result<Value> {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut last = String::new();
    let mut tick = 0usize;
    loop {
        let poll = if tty { "1s" } else { "10s" };
        let op = c.get(&format!("/v1/operations/{id}"), &[("wait".to_string(), poll.to_string())]).await?;
        let status = op["status"].as_str().unwrap_or("").to_string();
        let now = line(&op);
        if tty {
            tick += 1;
            eprint!("\r\x1b[2K{} {now}", SPINNER[tick % SPINNER.len()]);
            let _ = std::io::stderr().flush();
        } else if now != last {
            eprintln!("{now}");
        }
        last = now;
        if matches!(status.as_str(), "succeeded" | "failed" | "cancelled") {
            if tty {
                eprintln!();
            }
            for item in op["items"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                if item["status"] != "done" {
                    eprintln!(
                        "  {}: {} {}",
                        item["target"].as_str().unwrap_or(""),
                        item["status"].as_str().unwrap_or(""),
                        item["detail"].as_str().unwrap_or("")
                    );
                }
            }
            if status == "succeeded" {
                eprintln!("{id}: succeeded in {:.1} s", started.elapsed().as_secs_f64());
                return Ok(op);
            }
            let e = &op["error"];
            return Err(anyhow!(
                "{id} {status}: {} ({})",
                e["detail"].as_str().unwrap_or(""),
                e["code"].as_str().unwrap_or("")
            ));
        }
        if started.elapsed() > timeout {
            if tty {
                eprintln!();
            }
            return Err(anyhow!(
                "{id} is still {status} after {} s; follow it with `plinth operation wait {id}`",
                timeout.as_secs()
            ));
        }
    }
}
