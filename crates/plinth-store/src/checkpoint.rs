//! SQLite WAL checkpoints, off the write path.
//!
//! By default SQLite copies the write-ahead log back into the database file from inside the
//! `COMMIT` that takes the log past 1,000 pages, so one write in every few dozen waits
//! for the copy (bench/placement saw p99 go from about 4.5 ms to 6–8 ms). Here a task
//! with its own connection runs a `PASSIVE` checkpoint every [`TICK`], copying what it can
//! without waiting for, or blocking, the writer or the readers; its connection's thread
//! runs at the lowest CPU priority, so the copying gives way to requests.
//!
//! A log that is always being written to is never completely copied, though, and SQLite
//! only starts the log over from its beginning when it is: left alone, the log grows until
//! the writer's own automatic checkpoint (set high, [`BACKSTOP_PAGES`], as a backstop) does
//! the catching up inside a `COMMIT`. So once the log passes [`RESTART_PAGES`], the task
//! catches up without the writer until only the last few commits are left, then copies
//! those while holding the writer, and the next write starts the log over. Holding it costs
//! about 1.5–2 ms on this project's machines, mostly the two `fsync`s (log, then database
//! file) that must precede the log's restart. The task ends when the store is closed or
//! dropped.

use crate::writer::Writer;
use sqlx::{AnyConnection, Connection, Executor, Row};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often the background checkpoint runs.
const TICK: Duration = Duration::from_millis(100);

/// Log length (pages) past which the task makes the log start over.
const RESTART_PAGES: i64 = 4_096;

/// Before the log starts over, checkpoints without the writer run again (at most
/// [`CATCH_UP_PASSES`] times) until at most this many pages are left to copy.
const CATCH_UP_PAGES: i64 = 256;
const CATCH_UP_PASSES: usize = 4;

/// The writer's own automatic checkpoint (pages of WAL): only reached when the background
/// task cannot keep up or is stopped.
const BACKSTOP_PAGES: u32 = 65_536;

/// The WAL file is cut back to this size (bytes) after it starts over: above the size
/// [`RESTART_PAGES`] gives it, so the usual cycle reuses the file without truncating it.
const WAL_SIZE_LIMIT: u64 = 64 << 20;

/// The running checkpoint task; dropping it stops the task.
#[derive(Debug)]
pub(crate) struct Checkpointer(JoinHandle<()>);

impl Checkpointer {
    /// Starts checkpointing the database `url` on a connection of its own; `writer` is the
    /// store's write connection.
    pub(crate) async fn start(url: &str, writer: Writer) -> Result<Checkpointer, sqlx::Error> {
        let mut conn = connect_low_priority(url).await?;
        conn.execute("PRAGMA busy_timeout = 10000").await?;
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Checkpointer(tokio::spawn(async move {
            loop {
                every.tick().await;
                match checkpoint(&mut conn).await {
                    Ok((pages, _)) if pages >= RESTART_PAGES => {
                        // Catch up without the writer first, so that holding it copies
                        // only the last few commits.
                        for _ in 0..CATCH_UP_PASSES {
                            match checkpoint(&mut conn).await {
                                Ok((log, copied)) if log - copied > CATCH_UP_PAGES => continue,
                                _ => break,
                            }
                        }
                        // Copy what came in meanwhile with the writer held, so the log is
                        // completely copied when the next write begins.
                        let started = std::time::Instant::now();
                        let held = match writer.conn().await {
                            Ok(mut w) => checkpoint(&mut w).await,
                            Err(e) => Err(e),
                        };
                        match held {
                            Ok((log, copied)) => tracing::debug!(
                                log,
                                copied,
                                held_ms = started.elapsed().as_millis() as u64,
                                "sqlite checkpoint: the log copied with the writer held"
                            ),
                            Err(e) => tracing::warn!("sqlite checkpoint: {e}"),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("sqlite checkpoint: {e}"),
                }
            }
        })))
    }

    /// Stops the task (the store is closing).
    pub(crate) fn stop(&self) {
        self.0.abort();
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sets the write connection's own checkpoint to the backstop: only the writer commits, so
/// only its automatic checkpoint matters.
pub(crate) async fn configure_writer(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    conn.execute(sqlx::AssertSqlSafe(format!("PRAGMA wal_autocheckpoint = {BACKSTOP_PAGES}"))).await?;
    conn.execute(sqlx::AssertSqlSafe(format!("PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}"))).await?;
    Ok(())
}

/// Runs one `PASSIVE` checkpoint; returns the log's length and how much of it is copied
/// (pages).
async fn checkpoint(conn: &mut AnyConnection) -> Result<(i64, i64), sqlx::Error> {
    // Columns: busy, pages in the log, pages copied.
    let row = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").fetch_one(&mut *conn).await?;
    Ok((row.try_get::<i64, _>(1)?, row.try_get::<i64, _>(2)?))
}

/// Opens a connection whose thread runs at the lowest CPU priority (nice 19): sqlx runs
/// every statement of a SQLite connection on a thread of its own, started by the thread
/// that connects, and Linux threads start with their creator's priority.
async fn connect_low_priority(url: &str) -> Result<AnyConnection, sqlx::Error> {
    let url = url.to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("plinth-checkpoint-connect".into())
        .spawn(move || {
            // SAFETY: setpriority(2) with PRIO_PROCESS and 0 changes only the calling
            // thread's nice value on Linux; it reads and writes no memory of ours.
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, 0, 19);
            }
            let conn = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(sqlx::Error::Io)
                .and_then(|rt| rt.block_on(AnyConnection::connect(&url)));
            let _ = tx.send(conn);
        })
        .map_err(sqlx::Error::Io)?;
    rx.await.map_err(|_| sqlx::Error::WorkerCrashed)?
}
