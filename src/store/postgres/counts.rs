//! Inbox limits without counting a deep inbox on every send.
//!
//! Counting a recipient's open messages reads one index entry per open
//! message: with thousands queued that was most of PostgreSQL's work per
//! send. The limit protects memory and disk, not an invariant (racing
//! writers may pass it together anyway), so each node remembers its last
//! count of each recipient and counts again only when that count is older
//! than [`FRESH`] (or [`FRESH_FAR`] while the inbox is under a tenth of
//! its limit) or, with the sends since, within a tenth of the limit. Sends
//! through this node are added to the count as they pass, and messages it
//! closes (acks, mostly) taken off; only other nodes' changes go unseen
//! until the next count. (Without the closes, a busy agent's count
//! climbed by every send until it neared the limit each second, and was
//! counted again each second.)
//!
//! Counting is dear even for a short inbox: every claim and ack leaves a
//! dead entry in the index of open messages until vacuum, and a count
//! reads them all (measured: about 2,600 entries per count under a steady
//! 4,000 messages/s to 64 agents, the largest share of PostgreSQL's reads).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::domain::AgentId;

/// How long a count stands in for the database's.
const FRESH: Duration = Duration::from_secs(1);

/// How long a count under a tenth of the limit stands in: other nodes would
/// have to send most of a full inbox meanwhile to pass the limit.
const FRESH_FAR: Duration = Duration::from_secs(10);

/// Recipients remembered before the stale ones are forgotten.
const MAX_REMEMBERED: usize = 10_000;

#[derive(Default)]
pub(super) struct OpenCounts {
    counts: Mutex<HashMap<AgentId, Counted>>,
}

struct Counted {
    open: u64,
    at: Instant,
    /// Sends let through on this count since.
    added: u64,
    /// Open messages this node closed since.
    closed: u64,
}

impl OpenCounts {
    /// Whether one more message is clearly within `limit` by the last
    /// count; if so, counts it as added.
    pub(super) fn clearly_within(&self, agent: &AgentId, limit: u64) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(counted) = counts.get_mut(agent) else {
            return false;
        };
        let open = (counted.open + counted.added + 1).saturating_sub(counted.closed);
        let age = counted.at.elapsed();
        let fresh = age < FRESH || (age < FRESH_FAR && open < limit / 10);
        let within = fresh && open < limit - limit / 10;
        if within {
            counted.added += 1;
        }
        within
    }

    /// This node closed an open message of `agent`.
    pub(super) fn closed(&self, agent: &AgentId) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(counted) = counts.get_mut(agent) {
            counted.closed += 1;
        }
    }

    /// What the database counted just now.
    pub(super) fn counted(&self, agent: &AgentId, open: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.len() >= MAX_REMEMBERED {
            counts.retain(|_, counted| counted.at.elapsed() < FRESH_FAR);
        }
        counts.insert(
            agent.clone(),
            Counted {
                open,
                at: Instant::now(),
                added: 0,
                closed: 0,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_count_far_below_the_limit_stands_in_until_near_it() {
        let counts = OpenCounts::default();
        let agent = AgentId::parse("opencode://backend").unwrap();
        assert!(!counts.clearly_within(&agent, 100), "never counted");
        counts.counted(&agent, 80);
        let let_through = (0..20).take_while(|_| counts.clearly_within(&agent, 100)).count();
        assert_eq!(let_through, 9, "80 + 9 sends stay under 90, a tenth below the limit");
        counts.counted(&agent, 95);
        assert!(!counts.clearly_within(&agent, 100));
    }

    #[test]
    fn messages_closed_through_this_node_make_room_in_the_count() {
        let counts = OpenCounts::default();
        let agent = AgentId::parse("opencode://backend").unwrap();
        counts.counted(&agent, 80);
        assert_eq!((0..20).take_while(|_| counts.clearly_within(&agent, 100)).count(), 9);
        (0..5).for_each(|_| counts.closed(&agent));
        let let_through = (0..20).take_while(|_| counts.clearly_within(&agent, 100)).count();
        assert_eq!(let_through, 5, "five acked, five more let through");
    }

    #[test]
    fn a_count_under_a_tenth_of_the_limit_stands_in_longer() {
        let counts = OpenCounts::default();
        let (far, near) = (
            AgentId::parse("opencode://far").unwrap(),
            AgentId::parse("opencode://near").unwrap(),
        );
        counts.counted(&far, 5);
        counts.counted(&near, 50);
        for counted in counts.counts.lock().unwrap().values_mut() {
            counted.at -= Duration::from_secs(5);
        }
        assert!(counts.clearly_within(&far, 100), "5 of 100, counted 5 s ago");
        assert!(!counts.clearly_within(&near, 100), "50 of 100, counted 5 s ago");
    }
}
