//! A thin QMP client of our own (QEMU Machine Protocol over a unix socket).
//!
//! [`Qmp::connect`] reads the greeting and negotiates capabilities; [`Qmp::execute`] sends
//! a command with a numeric `id` and waits for the reply with that id (id → oneshot);
//! events are broadcast to every [`EventStream`]. Events that arrive while a command waits
//! for its reply are kept (QEMU sends `POWERDOWN` *before* the `return` of
//! `system_powerdown`). Unknown fields are ignored everywhere. When the connection ends
//! (QEMU exited, or closed the socket), pending commands fail with
//! [`QmpError::Disconnected`] and every event stream ends: that end *is* the report of a
//! disconnect.
//!
//! Only the commands the runtime uses are typed. QEMU allows one client per monitor
//! socket, so the runtime holds one connection per guest. Owns the wire protocol only; it
//! knows nothing of guests, steps or the agent.

use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{broadcast, oneshot};

/// Why a QMP call failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket could not be reached or read.
    #[error("QMP {0}")]
    Io(String),
    /// QEMU said something that is not QMP.
    #[error("QMP protocol: {0}")]
    Protocol(String),
    /// QEMU answered the command with an error (`class`, `desc`).
    #[error("QMP {command}: {class}: {desc}")]
    Command {
        /// The command.
        command: String,
        /// QEMU's error class (`GenericError`, `CommandNotFound`, …).
        class: String,
        /// QEMU's description (for humans; never parsed).
        desc: String,
    },
    /// The connection ended (QEMU exited or closed the socket).
    #[error("QMP connection closed")]
    Disconnected,
    /// No reply in time.
    #[error("QMP {0}: no reply in time")]
    Timeout(String),
}

/// One QMP event (`{"event", "data", "timestamp"}`).
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// The event's name (`SHUTDOWN`, `RESET`, `STOP`, …).
    pub name: String,
    /// Its data (`Null` when it has none).
    pub data: Value,
}

impl Event {
    /// `data.guest` of `SHUTDOWN` and `RESET`: whether the guest itself caused it.
    pub fn guest(&self) -> Option<bool> {
        self.data.get("guest").and_then(Value::as_bool)
    }

    /// `data.reason` of `SHUTDOWN` and `RESET` (`guest-shutdown`, `host-qmp-quit`, …).
    pub fn reason(&self) -> Option<&str> {
        self.data.get("reason").and_then(Value::as_str)
    }
}

/// A stream of the connection's events; it ends ([`EventStream::recv`] answers `None`)
/// when the connection ends.
pub struct EventStream {
    rx: broadcast::Receiver<Event>,
}

impl EventStream {
    /// The next event; `None` once the connection has ended. Events lost because this
    /// stream fell far behind are skipped (with a warning).
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(lost = n, "QMP event stream fell behind; events lost");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// `query-status`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// Whether the vCPUs run.
    pub running: bool,
    /// The run state (`running`, `paused`, `shutdown`, `guest-panicked`, …).
    pub status: String,
}

/// One vCPU of `query-cpus-fast`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct CpuInfo {
    /// The vCPU's index.
    #[serde(rename = "cpu-index")]
    pub cpu_index: u32,
    /// The host thread that runs it.
    #[serde(rename = "thread-id")]
    pub thread_id: i32,
}

type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<Result<Value, QmpError>>>>>>;

/// How long a command waits for its reply by default.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// One QMP connection.
pub struct Qmp {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: AtomicU64,
    /// Kept only to make new streams; the reader task holds the one sender, so the streams
    /// end with the connection.
    events: broadcast::Receiver<Event>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Qmp {
    fn drop(&mut self) {
        // Closing the read half too closes the socket, so QEMU can take another client.
        self.reader.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Qmp {
    /// Connects to the monitor at `socket`, reads the greeting and negotiates
    /// capabilities, each within `timeout`. Answers the connection and a stream of its
    /// events (none is lost between the handshake and the first `recv`).
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<(Qmp, EventStream), QmpError> {
        let stream = tokio::time::timeout(timeout, UnixStream::connect(socket))
            .await
            .map_err(|_| QmpError::Timeout(format!("connect {}", socket.display())))?
            .map_err(|e| QmpError::Io(format!("connect {}: {e}", socket.display())))?;
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let greeting = tokio::time::timeout(timeout, lines.next_line())
            .await
            .map_err(|_| QmpError::Timeout("greeting".into()))?
            .map_err(|e| QmpError::Io(format!("greeting: {e}")))?
            .ok_or(QmpError::Disconnected)?;
        let greeting: Value =
            serde_json::from_str(&greeting).map_err(|e| QmpError::Protocol(format!("greeting {greeting:?}: {e}")))?;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!("not a QMP greeting: {greeting}")));
        }
        let hello = json!({"execute": "qmp_capabilities", "id": 0});
        write_line(&mut write, &hello).await?;
        // No events are sent before capabilities are negotiated: the next line is the reply.
        let reply = tokio::time::timeout(timeout, lines.next_line())
            .await
            .map_err(|_| QmpError::Timeout("qmp_capabilities".into()))?
            .map_err(|e| QmpError::Io(format!("qmp_capabilities: {e}")))?
            .ok_or(QmpError::Disconnected)?;
        let reply: Value =
            serde_json::from_str(&reply).map_err(|e| QmpError::Protocol(format!("reply {reply:?}: {e}")))?;
        reply_result("qmp_capabilities", &reply)?;

        let (tx, rx) = broadcast::channel(256);
        let events = rx.resubscribe();
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let reader = tokio::spawn(read_loop(lines, pending.clone(), tx));
        let qmp = Qmp { writer: tokio::sync::Mutex::new(write), pending, next_id: AtomicU64::new(1), events, reader };
        Ok((qmp, EventStream { rx }))
    }

    /// Another stream of this connection's events, from now on.
    pub fn subscribe(&self) -> EventStream {
        EventStream { rx: self.events.resubscribe() }
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        lock(&self.pending).is_none()
    }

    /// Runs `command` with `arguments` (`Value::Null`: none); answers its `return`.
    pub async fn execute(&self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        self.execute_within(command, arguments, REPLY_TIMEOUT).await
    }

    /// [`Qmp::execute`] with its own reply timeout.
    pub async fn execute_within(&self, command: &str, arguments: Value, timeout: Duration) -> Result<Value, QmpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        match lock(&self.pending).as_mut() {
            Some(map) => map.insert(id, tx),
            None => return Err(QmpError::Disconnected),
        };
        let mut msg = json!({"execute": command, "id": id});
        if !arguments.is_null() {
            msg["arguments"] = arguments;
        }
        let sent = {
            let mut w = self.writer.lock().await;
            write_line(&mut w, &msg).await
        };
        if let Err(e) = sent {
            if let Some(map) = lock(&self.pending).as_mut() {
                map.remove(&id);
            }
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(QmpError::Command { class, desc, .. }))) => {
                Err(QmpError::Command { command: command.to_string(), class, desc })
            }
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(QmpError::Disconnected),
            Err(_) => {
                if let Some(map) = lock(&self.pending).as_mut() {
                    map.remove(&id);
                }
                Err(QmpError::Timeout(command.to_string()))
            }
        }
    }

    /// `query-status`.
    pub async fn query_status(&self) -> Result<Status, QmpError> {
        let v = self.execute("query-status", Value::Null).await?;
        serde_json::from_value(v).map_err(|e| QmpError::Protocol(format!("query-status: {e}")))
    }

    /// `query-cpus-fast`, in vCPU order.
    pub async fn query_cpus_fast(&self) -> Result<Vec<CpuInfo>, QmpError> {
        let v = self.execute("query-cpus-fast", Value::Null).await?;
        let mut cpus: Vec<CpuInfo> =
            serde_json::from_value(v).map_err(|e| QmpError::Protocol(format!("query-cpus-fast: {e}")))?;
        cpus.sort_by_key(|c| c.cpu_index);
        Ok(cpus)
    }

    /// `system_powerdown`: presses the ACPI power button (the guest may ignore it).
    pub async fn system_powerdown(&self) -> Result<(), QmpError> {
        self.execute("system_powerdown", Value::Null).await.map(drop)
    }

    /// `system_reset`: a hard reset; the guest reboots in place.
    pub async fn system_reset(&self) -> Result<(), QmpError> {
        self.execute("system_reset", Value::Null).await.map(drop)
    }

    /// `stop`: pauses the vCPUs.
    pub async fn stop(&self) -> Result<(), QmpError> {
        self.execute("stop", Value::Null).await.map(drop)
    }

    /// `cont`: resumes the vCPUs.
    pub async fn cont(&self) -> Result<(), QmpError> {
        self.execute("cont", Value::Null).await.map(drop)
    }

    /// `quit`: ends QEMU. A connection closed before the reply counts as done.
    pub async fn quit(&self) -> Result<(), QmpError> {
        match self.execute_within("quit", Value::Null, Duration::from_secs(5)).await {
            Ok(_) | Err(QmpError::Disconnected) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

async fn write_line(w: &mut OwnedWriteHalf, msg: &Value) -> Result<(), QmpError> {
    let mut text = msg.to_string();
    text.push('\n');
    w.write_all(text.as_bytes()).await.map_err(|e| QmpError::Io(format!("write: {e}")))
}

/// A reply's `return`, or its `error` as [`QmpError::Command`].
fn reply_result(command: &str, reply: &Value) -> Result<Value, QmpError> {
    if let Some(v) = reply.get("return") {
        return Ok(v.clone());
    }
    if let Some(err) = reply.get("error") {
        let s = |k: &str| err.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
        return Err(QmpError::Command { command: command.to_string(), class: s("class"), desc: s("desc") });
    }
    Err(QmpError::Protocol(format!("{command}: neither return nor error in {reply}")))
}

async fn read_loop(
    mut lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    pending: Pending,
    events: broadcast::Sender<Event>,
) {
    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("QMP read: {e}");
                break;
            }
        };
        let msg: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!("QMP: ignoring a line that is not JSON ({e}): {line:?}");
                continue;
            }
        };
        if let Some(name) = msg.get("event").and_then(Value::as_str) {
            let data = msg.get("data").cloned().unwrap_or(Value::Null);
            // No subscriber is not an error: the event is simply not wanted.
            let _ = events.send(Event { name: name.to_string(), data });
        } else if let Some(id) = msg.get("id").and_then(Value::as_u64) {
            let tx = lock(&pending).as_mut().and_then(|m| m.remove(&id));
            if let Some(tx) = tx {
                let _ = tx.send(reply_result("", &msg));
            }
        } else {
            tracing::debug!("QMP: ignoring {line:?}");
        }
    }
    // Fail every command still waiting and refuse new ones; dropping the sender (the only
    // one) ends the event streams.
    let waiting = lock(&pending).take();
    for (_, tx) in waiting.into_iter().flatten() {
        let _ = tx.send(Err(QmpError::Disconnected));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A fake QEMU monitor: greets, accepts capabilities, then answers `system_powerdown`
    /// with an event *before* the reply (as QEMU does), and closes on `quit`.
    async fn fake_qemu(listener: UnixListener) {
        let Ok((sock, _)) = listener.accept().await else { return };
        let (r, mut w) = sock.into_split();
        let mut lines = BufReader::new(r).lines();
        let greet = r#"{"QMP": {"version": {"qemu": {"major": 7}}, "capabilities": ["oob"], "future": 1}}"#;
        let _ = w.write_all(format!("{greet}\r\n").as_bytes()).await;
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(msg) = serde_json::from_str::<Value>(&line) else { continue };
            let id = msg["id"].clone();
            let out = match msg["execute"].as_str().unwrap_or_default() {
                "qmp_capabilities" => json!({"return": {}, "id": id}).to_string(),
                "query-status" => {
                    json!({"return": {"status": "running", "singlestep": false, "running": true}, "id": id}).to_string()
                }
                "system_powerdown" => format!(
                    "{}\r\n{}",
                    json!({"event": "POWERDOWN", "data": {}, "timestamp": {"seconds": 1, "microseconds": 2}}),
                    json!({"return": {}, "id": id})
                ),
                "quit" => {
                    let _ = w.write_all(format!("{}\r\n", json!({"return": {}, "id": id})).as_bytes()).await;
                    return;
                }
                other => {
                    json!({"error": {"class": "CommandNotFound", "desc": format!("no {other}")}, "id": id}).to_string()
                }
            };
            let _ = w.write_all(format!("{out}\r\n").as_bytes()).await;
        }
    }

    #[tokio::test]
    async fn handshake_commands_events_and_disconnect() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(fake_qemu(listener));
        let (qmp, mut events) = Qmp::connect(&path, Duration::from_secs(5)).await.expect("connect");
        let st = qmp.query_status().await.expect("status");
        assert_eq!(st, Status { running: true, status: "running".into() });
        // The event sent before the reply is not lost.
        qmp.system_powerdown().await.expect("powerdown");
        let ev = events.recv().await.expect("event");
        assert_eq!(ev.name, "POWERDOWN");
        match qmp.execute("nope", Value::Null).await {
            Err(QmpError::Command { command, class, .. }) => {
                assert_eq!((command.as_str(), class.as_str()), ("nope", "CommandNotFound"))
            }
            other => panic!("{other:?}"),
        }
        qmp.quit().await.expect("quit");
        // The disconnect ends the event stream and fails later commands.
        assert_eq!(events.recv().await, None);
        assert!(matches!(qmp.query_status().await, Err(QmpError::Disconnected)));
        assert!(qmp.is_closed());
        server.await.expect("server");
    }
}
