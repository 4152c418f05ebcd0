//! Retention: what the writer removes once it is older than the configured
//! ages, in small batches, each in the group commit of the moment (so a
//! batch delays the writes beside it by a few milliseconds at most), and
//! the incremental vacuum that gives the freed pages back.

use rusqlite::{Connection, params};

use super::backend;
use super::rows::{parse_session, state_code, to_i64};
use crate::domain::Timestamp;
use crate::domain::session::SessionState;
use crate::store::StoreError;

/// Pages freed per [`reclaim`]: 4 MiB of 4 KiB pages.
const RECLAIM_PAGES: u32 = 1024;

/// Closed messages (every state but 1 and 2, as the `messages_closed`
/// index) that closed before `before`, oldest first.
pub(super) fn prune_messages(conn: &Connection, before: Timestamp, limit: usize) -> Result<u64, StoreError> {
    conn.prepare_cached(
        "DELETE FROM messages WHERE rowid IN (
             SELECT rowid FROM messages WHERE state NOT IN (1, 2) AND available_at < ?1
             ORDER BY available_at LIMIT ?2)",
    )
    .and_then(|mut stmt| stmt.execute(params![before.unix_micros(), to_i64(limit as u64)]))
    .map(|n| n as u64)
    .map_err(backend)
}

/// The oldest events committed before `before`, up to the first that was
/// not, and never the latest (whose sequence the next one follows): what
/// stays is every event after some sequence number.
pub(super) fn prune_events(conn: &Connection, before: Timestamp, limit: usize) -> Result<u64, StoreError> {
    let latest: Option<i64> = conn
        .query_row("SELECT MAX(seq) FROM session_events", [], |r| r.get(0))
        .map_err(backend)?;
    let Some(latest) = latest else { return Ok(0) };
    let mut stmt = conn
        .prepare_cached("SELECT seq, at FROM session_events WHERE seq < ?1 ORDER BY seq LIMIT ?2")
        .map_err(backend)?;
    let mut rows = stmt.query(params![latest, to_i64(limit as u64)]).map_err(backend)?;
    let (mut through, mut count) = (None, 0);
    while let Some(row) = rows.next().map_err(backend)? {
        let (seq, at): (i64, i64) = (row.get(0).map_err(backend)?, row.get(1).map_err(backend)?);
        if at >= before.unix_micros() {
            break;
        }
        through = Some(seq);
        count += 1;
    }
    let Some(through) = through else { return Ok(0) };
    conn.prepare_cached("DELETE FROM session_events WHERE seq <= ?1")
        .and_then(|mut stmt| stmt.execute([through]))
        .map_err(backend)?;
    Ok(count)
}

/// Ended sessions last changed before `before`, with their rows of
/// participants (found through the participants of the session itself).
pub(super) fn prune_sessions(conn: &Connection, before: Timestamp, limit: usize) -> Result<u64, StoreError> {
    let ended = [SessionState::Completed, SessionState::Terminated, SessionState::Expired].map(state_code);
    let sessions: Vec<(String, i64, String)> = conn
        .prepare_cached(
            "SELECT session_id, created_seq, body FROM sessions
             WHERE state IN (?1, ?2, ?3) AND updated_at < ?4 LIMIT ?5",
        )
        .and_then(|mut stmt| {
            stmt.query_map(
                params![ended[0], ended[1], ended[2], before.unix_micros(), to_i64(limit as u64)],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?
            .collect()
        })
        .map_err(backend)?;
    let mut participants = conn
        .prepare_cached("DELETE FROM session_participants WHERE agent_id = ?1 AND created_seq = ?2")
        .map_err(backend)?;
    let mut session = conn
        .prepare_cached("DELETE FROM sessions WHERE session_id = ?1")
        .map_err(backend)?;
    for (id, created_seq, body) in &sessions {
        for participant in parse_session(body)?.participants {
            participants
                .execute(params![participant.agent_id.as_str(), created_seq])
                .map_err(backend)?;
        }
        session.execute([id]).map_err(backend)?;
    }
    Ok(sessions.len() as u64)
}

/// Moves up to [`RECLAIM_PAGES`] free pages to the end of the file and cuts
/// them off (the file shrinks at the next checkpoint).
pub(super) fn reclaim(conn: &Connection) -> Result<u64, StoreError> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA incremental_vacuum({RECLAIM_PAGES})"))
        .map_err(backend)?;
    let mut rows = stmt.query([]).map_err(backend)?;
    while rows.next().map_err(backend)?.is_some() {}
    Ok(0)
}

/// The oldest event kept, if any.
pub(super) fn oldest_event(conn: &Connection) -> Result<Option<u64>, StoreError> {
    conn.query_row("SELECT MIN(seq) FROM session_events", [], |r| r.get(0))
        .map_err(backend)
}
