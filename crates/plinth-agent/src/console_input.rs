//! Typing into guests' serial consoles: what users type (`POST /v1/instances/{id}/console/input`)
//! waits on the server until this host's agent takes it (`POST /agent/v1/console-input`,
//! long-polled over the agent's own outbound connection: the agent opens no port) and
//! writes it to the guest's serial port.
//!
//! A guest's serial port is a socket chardev that only the agent connects to
//! ([`crate::Runtime::console_socket`]). A write connects, sends the bytes, half-closes,
//! and reads (dropping what the guest prints meanwhile; the console log has it) until QEMU
//! has taken them and closes its side: QEMU takes input only as fast as the guest's UART
//! accepts it, so closing at once could cut it. Input for a guest that is not running here
//! is dropped. Each input is acknowledged on the next call, once written (or dropped), and
//! acknowledgements are sent again until a call succeeds; the server forgets what is
//! acknowledged before it answers, so no input comes back once written. What users type is
//! never logged: it may be a password.
//!
//! Owns the loop and the socket writes; the runtime says where each guest's socket is.

use crate::backoff::Backoff;
use crate::client::HostClient;
use crate::runtime::Runtime;
use plinth_api::{ConsoleInputAck, ConsoleInputPoll, InstanceId};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// How long one write to a guest may take before it is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Takes input from the server and writes it to the guests until `stop` turns true.
pub async fn run<R: Runtime>(host: HostClient, runtime: Arc<R>, wait: u64, mut stop: watch::Receiver<bool>) {
    let mut acked: HashMap<InstanceId, i64> = HashMap::new();
    let mut backoff = Backoff::for_server(0);
    loop {
        let poll = ConsoleInputPoll {
            acked: acked.iter().map(|(id, seq)| ConsoleInputAck { instance_id: id.clone(), seq: *seq }).collect(),
            wait,
        };
        let answer = tokio::select! {
            a = host.console_input(&poll) => a,
            r = stop.changed() => if r.is_err() || *stop.borrow() { return } else { continue },
        };
        let batch = match answer {
            Ok(b) => {
                backoff.reset();
                acked.clear();
                b
            }
            Err(e) => {
                tracing::debug!(error = %e, "taking console input failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => {}
                    r = stop.changed() => if r.is_err() || *stop.borrow() { return },
                }
                continue;
            }
        };
        for chunk in batch.chunks {
            let id = chunk.instance_id;
            match runtime.console_socket(&id) {
                Some(socket) => match tokio::time::timeout(WRITE_TIMEOUT, write_to(&socket, chunk.data.as_bytes()))
                    .await
                {
                    Ok(Ok(())) => tracing::debug!(instance = %id, bytes = chunk.data.len(), "console input written"),
                    Ok(Err(e)) => {
                        tracing::warn!(instance = %id, error = %e, "console input dropped: the guest's serial port refused it")
                    }
                    Err(_) => {
                        tracing::warn!(instance = %id, "console input dropped: the guest's serial port did not take it in time")
                    }
                },
                None => tracing::debug!(instance = %id, "console input dropped: the guest is not on this host"),
            }
            acked.insert(id, chunk.seq);
        }
    }
}

/// Writes `data` to the serial console socket at `socket`, returning once QEMU has taken
/// all of it.
pub async fn write_to(socket: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut s = tokio::net::UnixStream::connect(socket).await?;
    s.write_all(data).await?;
    s.shutdown().await?;
    // QEMU closes once it has read to our end of stream; until then drop what it sends.
    let mut sink = [0u8; 4096];
    while s.read(&mut sink).await? > 0 {}
    Ok(())
}
