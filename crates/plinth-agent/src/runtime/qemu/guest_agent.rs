//! QEMU's guest agent (qemu-ga in the guest), reached through the guest's `qga.sock`
//! (a socket chardev QEMU listens on, behind the virtio-serial port
//! `org.qemu.guest_agent.0`): freezing and thawing the guest's filesystems around a live
//! snapshot.
//!
//! The channel is a byte pipe into the guest: nobody may be reading at the other end, and
//! an abandoned exchange leaves its answer queued for the next client. So every
//! connection first synchronises (`guest-sync-delimited` with a fresh id, after a 0xFF
//! byte that resets the agent's parser; the answer comes after a 0xFF byte of its own)
//! and reads past anything older; every call has a deadline. A freeze is recorded in a
//! file beside the socket until its thaw has been answered, so an agent that dies in
//! between thaws the guest when it is back ([`thaw_left`]).

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// How long the guest agent has to answer the synchronisation: an absent or stopped
/// agent costs a snapshot this much.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(3);
/// How long it has to freeze (it syncs each filesystem first) and to thaw.
pub const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// One synchronised connection to a guest's agent.
pub struct GuestAgent {
    io: BufReader<UnixStream>,
}

/// The file that says the guest's filesystems may be frozen (beside its socket).
pub fn marker(socket: &Path) -> PathBuf {
    socket.with_extension("frozen")
}

impl GuestAgent {
    /// Connects to the guest agent behind `socket` and synchronises with it.
    pub async fn connect(socket: &Path, within: Duration) -> Result<GuestAgent, String> {
        let stream = tokio::time::timeout(within, UnixStream::connect(socket))
            .await
            .map_err(|_| "the guest's agent channel did not accept a connection in time".to_string())?
            .map_err(|e| format!("the guest has no agent channel ({e}): it was started without one"))?;
        let mut agent = GuestAgent { io: BufReader::new(stream) };
        let id = sync_id();
        let sync = json!({ "execute": "guest-sync-delimited", "arguments": { "id": id } });
        let answered = async {
            agent.io.get_mut().write_all(&[0xff]).await?;
            agent.send(&sync).await?;
            loop {
                // Past everything up to the 0xFF that starts the sync's answer.
                let mut byte = [0u8];
                while agent.io.read(&mut byte).await? == 1 && byte[0] != 0xff {}
                let line = agent.line().await?;
                if serde_json::from_str::<Value>(&line).ok().and_then(|v| v["return"].as_u64()) == Some(id) {
                    return Ok::<(), std::io::Error>(());
                }
            }
        };
        match tokio::time::timeout(within, answered).await {
            Ok(Ok(())) => Ok(agent),
            Ok(Err(e)) => Err(format!("the guest's agent channel: {e}")),
            Err(_) => Err(format!(
                "the guest agent did not answer within {} s (is qemu-ga running in the guest?)",
                within.as_secs()
            )),
        }
    }

    async fn send(&mut self, v: &Value) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(v).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.io.get_mut().write_all(&line).await
    }

    /// The next line, without the 0xFF bytes that start delimited answers.
    async fn line(&mut self) -> std::io::Result<String> {
        let mut line = Vec::new();
        if self.io.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the channel closed"));
        }
        line.retain(|b| *b != 0xff);
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    /// Runs `command` and answers its `return`, or (inside) the agent's refusal; outside,
    /// the channel failed or the agent did not answer in time.
    async fn execute(&mut self, command: &str, within: Duration) -> Result<Result<Value, String>, String> {
        let call = async {
            self.send(&json!({ "execute": command })).await?;
            loop {
                let line = self.line().await?;
                let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
                if let Some(r) = v.get("return") {
                    return Ok::<_, std::io::Error>(Ok(r.clone()));
                }
                if let Some(e) = v.get("error") {
                    let desc = e["desc"].as_str().unwrap_or("no description");
                    return Ok(Err(format!("the guest agent refused {command}: {desc}")));
                }
            }
        };
        match tokio::time::timeout(within, call).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(format!("the guest's agent channel during {command}: {e}")),
            Err(_) => Err(format!("the guest agent did not answer {command} within {} s", within.as_secs())),
        }
    }

    /// Freezes the guest's filesystems; answers how many it froze. The marker is written
    /// first: whatever the answer, a thaw is owed until one is answered.
    pub async fn freeze(&mut self, socket: &Path) -> Result<u64, String> {
        tokio::fs::write(marker(socket), b"").await.map_err(|e| format!("{}: {e}", marker(socket).display()))?;
        let n = self.execute("guest-fsfreeze-freeze", FREEZE_TIMEOUT).await??;
        n.as_u64().ok_or_else(|| format!("the guest agent answered the freeze with {n}"))
    }

    /// Thaws the guest's filesystems; once the agent has answered (even that nothing was
    /// frozen), the marker goes.
    pub async fn thaw(&mut self, socket: &Path) -> Result<(), String> {
        let answer = self.execute("guest-fsfreeze-thaw", FREEZE_TIMEOUT).await?;
        let _ = tokio::fs::remove_file(marker(socket)).await;
        answer.map(drop)
    }
}

/// A thaw owed to the guest behind `socket` (an agent that froze it and died before the
/// thaw was answered): sent now. Nothing to do, nothing is sent.
pub async fn thaw_left(socket: &Path) -> Result<(), String> {
    if !marker(socket).exists() {
        return Ok(());
    }
    if !socket.exists() {
        // Its QEMU is gone, and the freeze with it.
        let _ = tokio::fs::remove_file(marker(socket)).await;
        return Ok(());
    }
    let mut agent = GuestAgent::connect(socket, SYNC_TIMEOUT).await?;
    agent.thaw(socket).await?;
    tracing::info!(socket = %socket.display(), "guest agent: filesystems thawed after a restart");
    Ok(())
}

/// A synchronisation id no earlier connection used.
fn sync_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    // Below 2^53: JSON numbers stay exact whoever parses them.
    ((now.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)).wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
        & ((1 << 53) - 1)
}
