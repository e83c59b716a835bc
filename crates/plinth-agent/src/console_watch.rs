//! Wake-ups for console shipping: an inotify watch on each guest's directory tells the
//! runner as soon as a console log is written (or created, or rotated), so new output
//! reaches the server within a round trip instead of at the next look. Where inotify
//! cannot be used (no instance, a directory not made yet), the runner looks at the logs
//! on a short period instead (see `crate::runner`).
//!
//! Owns the inotify instance and its watches; knows nothing of shipping.

use futures::{FutureExt, StreamExt};
use inotify::{EventStream, Inotify, WatchDescriptor, WatchMask};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Watches the directories of guests' console logs.
pub struct ConsoleWatch {
    stream: Option<EventStream<Vec<u8>>>,
    dirs: HashMap<PathBuf, WatchDescriptor>,
}

impl std::fmt::Debug for ConsoleWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleWatch").field("inotify", &self.stream.is_some()).field("dirs", &self.dirs.len()).finish()
    }
}

impl Default for ConsoleWatch {
    fn default() -> Self {
        ConsoleWatch::new()
    }
}

impl ConsoleWatch {
    /// A watch with no directories yet; without inotify, one that never wakes.
    pub fn new() -> ConsoleWatch {
        let stream = Inotify::init().and_then(|i| i.into_event_stream(vec![0u8; 4096]));
        let stream = match stream {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::info!("inotify unavailable ({e}): console logs are looked at on a timer");
                None
            }
        };
        ConsoleWatch { stream, dirs: HashMap::new() }
    }

    /// Watches the directories of `logs`, and no others. Answers whether every one is
    /// watched (false: some change would go unnoticed, so the caller keeps looking).
    pub fn sync(&mut self, logs: &[PathBuf]) -> bool {
        let Some(stream) = &self.stream else { return false };
        let want: HashSet<&Path> = logs.iter().filter_map(|p| p.parent()).collect();
        let mut watches = stream.watches();
        self.dirs.retain(|dir, wd| {
            let keep = want.contains(dir.as_path());
            if !keep {
                // Already gone when the directory was removed: nothing to undo then.
                let _ = watches.remove(wd.clone());
            }
            keep
        });
        let mut all = true;
        for dir in want {
            if self.dirs.contains_key(dir) {
                continue;
            }
            let mask = WatchMask::MODIFY | WatchMask::CREATE | WatchMask::MOVED_TO | WatchMask::CLOSE_WRITE;
            match watches.add(dir, mask) {
                Ok(wd) => {
                    self.dirs.insert(dir.to_path_buf(), wd);
                }
                // Not made yet (the guest is being prepared), or out of watches.
                Err(_) => all = false,
            }
        }
        all
    }

    /// Resolves once something was written in a watched directory, taking every change
    /// already queued with it; never resolves without inotify.
    pub async fn changed(&mut self) {
        let Some(stream) = &mut self.stream else { return std::future::pending().await };
        match stream.next().await {
            Some(Ok(_)) => {
                // One wake-up for a burst of writes (a serial console writes byte by byte).
                while let Some(Some(Ok(_))) = stream.next().now_or_never() {}
            }
            Some(Err(e)) => {
                tracing::warn!("inotify failed ({e}): console logs are looked at on a timer from now on");
                self.stream = None;
                self.dirs.clear();
            }
            None => {
                self.stream = None;
                self.dirs.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_write_to_a_watched_log_wakes_it_and_an_unmade_directory_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let guest = dir.path().join("ins_1");
        let log = guest.join("console.log");
        let mut w = ConsoleWatch::new();
        assert!(!w.sync(std::slice::from_ref(&log)), "the guest's directory is not made yet");
        std::fs::create_dir(&guest).expect("mkdir");
        assert!(w.sync(std::slice::from_ref(&log)), "now it is watched");
        std::fs::write(&log, b"PLINTH-GUEST-READY\n").expect("write");
        tokio::time::timeout(Duration::from_secs(30), w.changed()).await.expect("woken by the write");
        // Forgotten guests are no longer watched.
        assert!(w.sync(&[]));
        assert!(w.dirs.is_empty());
    }
}
