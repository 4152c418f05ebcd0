//! The checkpointer: copies the write-ahead log back into the database
//! file beside the writer, so commits never checkpoint.

use std::path::Path;

use rusqlite::Connection;

use super::{backend, open_error};
use crate::store::StoreError;

/// Copies the WAL back into the database on its own thread and connection.
/// SQLite's automatic checkpoint runs inside the commit that crosses its
/// threshold, and then after every commit until the WAL starts over, each
/// time with an fsync of the database: it stalled the writer and every write
/// queued behind it (open-loop delivery fell over at 4,000/s). Here PASSIVE
/// checkpoints, which never block the writer, copy the WAL every
/// [`CHECKPOINT_EVERY`]. The writer starts the WAL over only when every
/// frame was copied before its transaction began, which a steady stream of
/// commits rarely allows; so once the WAL holds [`WAL_RESTART`] frames, a
/// RESTART checkpoint (right after a PASSIVE one, with little left to copy)
/// makes the writer wait that long for it to start the WAL over.
pub(super) struct Checkpointer {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);
/// About 32 MiB of 4 KiB pages.
const WAL_RESTART: i64 = 8192;

/// The busy handler of the writer and the checkpointer: each waits only for
/// the other (a RESTART checkpoint, a commit), which is short, so it retries
/// every 100 µs rather than with SQLite's default back-off of sleeps up to
/// 100 ms. At least five seconds in all, like the busy timeout it replaces.
pub(super) fn retry_soon(retries: i32) -> bool {
    std::thread::sleep(std::time::Duration::from_micros(100));
    retries < 50_000
}

impl Checkpointer {
    pub(super) fn start(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path).map_err(|e| open_error(path, e))?;
        conn.busy_handler(Some(retry_soon)).map_err(backend)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        // (busy, frames in the WAL, frames copied)
        let checkpoint = move |mode: &str| {
            let frames = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get::<_, i64>(1));
            frames.inspect_err(|error| tracing::warn!(%error, mode, "WAL checkpoint failed; retrying"))
        };
        let thread = std::thread::Builder::new()
            .name("agentbus-sqlite-checkpoint".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_EVERY) {
                    if checkpoint("PASSIVE").is_ok_and(|frames| frames >= WAL_RESTART) {
                        let _ = checkpoint("RESTART");
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Self { stop, thread })
    }

    pub(super) fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}
