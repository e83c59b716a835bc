//! Shipping guests' serial console logs to the server.
//!
//! A runtime writes each guest's console to a file on the host
//! ([`crate::Runtime::console_log`]); the server cannot read it (the agent opens no port),
//! so the agent sends what is new, in order, with `POST /agent/v1/instances/{id}/console`.
//! A stream is one log file (named by its inode); offsets count bytes of it. The first
//! call for a stream (an empty body) asks the server how far it has it, so a restarted
//! agent neither resends nor loses output. A file that shrank was rotated by the runtime:
//! it is sent again from 0 as a restart of the stream (`reset`).
//!
//! Owns only the cursors; the runner decides when to ship and logs failures.

use crate::client::{ClientError, HostClient};
use plinth_api::{ConsoleChunkQuery, InstanceId};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// The most sent in one call.
const CHUNK: u64 = 256 * 1024;

#[derive(Clone, Debug)]
struct Cursor {
    stream: String,
    /// Sent (and acknowledged) up to here.
    pos: u64,
    /// The next send restarts the stream from 0.
    reset: bool,
}

/// Where each guest's console has been shipped up to.
#[derive(Debug, Default)]
pub struct ConsoleShipper {
    cursors: HashMap<InstanceId, Cursor>,
}

impl ConsoleShipper {
    /// A shipper that has sent nothing yet.
    pub fn new() -> ConsoleShipper {
        ConsoleShipper::default()
    }

    /// Sends what is new in each listed guest's console log; forgets guests not listed.
    /// Answers the number of bytes sent. A log that cannot be read is skipped (the guest
    /// may not have started yet); the first failed call ends the round.
    pub async fn ship(&mut self, host: &HostClient, guests: &[(InstanceId, PathBuf)]) -> Result<u64, ClientError> {
        self.cursors.retain(|id, _| guests.iter().any(|(g, _)| g == id));
        let mut sent = 0;
        for (id, path) in guests {
            let Ok(meta) = tokio::fs::metadata(path).await else { continue };
            let stream = meta.ino().to_string();
            let len = meta.len();
            let cursor = match self.cursors.get(id) {
                Some(c) if c.stream == stream => c.clone(),
                _ => {
                    let q = ConsoleChunkQuery { stream: stream.clone(), offset: 0, reset: false };
                    let ack = host.console(id, &q, Vec::new()).await?;
                    Cursor { stream: stream.clone(), pos: ack.acked, reset: false }
                }
            };
            let mut cursor = cursor;
            if len < cursor.pos {
                // Rotated (truncated) since: the stream starts again.
                cursor.pos = 0;
                cursor.reset = true;
            }
            while len > cursor.pos {
                let want = (len - cursor.pos).min(CHUNK);
                let data = match read_at(path, cursor.pos, want).await {
                    Ok(d) if !d.is_empty() => d,
                    _ => break,
                };
                let q = ConsoleChunkQuery { stream: stream.clone(), offset: cursor.pos, reset: cursor.reset };
                let n = data.len() as u64;
                let ack = host.console(id, &q, data).await?;
                sent += n;
                cursor.reset = false;
                if ack.acked <= cursor.pos {
                    break; // the server did not move: try again next round
                }
                cursor.pos = ack.acked;
            }
            self.cursors.insert(id.clone(), cursor);
        }
        Ok(sent)
    }
}

async fn read_at(path: &PathBuf, pos: u64, want: u64) -> std::io::Result<Vec<u8>> {
    let mut f = tokio::fs::File::open(path).await?;
    f.seek(std::io::SeekFrom::Start(pos)).await?;
    let mut buf = Vec::with_capacity(want as usize);
    f.take(want).read_to_end(&mut buf).await?;
    Ok(buf)
}
