//! Inbox limits without counting a deep inbox on every send.
//!
//! Counting a recipient's open messages reads one index entry per open
//! message: with thousands queued that was most of PostgreSQL's work per
//! send. The limit protects memory and disk, not an invariant (racing
//! writers may pass it together anyway), so each node remembers its last
//! count of each recipient and counts again only when that count is older
//! than [`FRESH`] or, with the sends since, within a tenth of the limit.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::domain::AgentId;

/// How long a count stands in for the database's.
const FRESH: Duration = Duration::from_secs(1);

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
}

impl OpenCounts {
    /// Whether one more message is clearly within `limit` by the last
    /// count; if so, counts it as added.
    pub(super) fn clearly_within(&self, agent: &AgentId, limit: u64) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(counted) = counts.get_mut(agent) else {
            return false;
        };
        let within = counted.at.elapsed() < FRESH && counted.open + counted.added + 1 < limit - limit / 10;
        if within {
            counted.added += 1;
        }
        within
    }

    /// What the database counted just now.
    pub(super) fn counted(&self, agent: &AgentId, open: u64) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.len() >= MAX_REMEMBERED {
            counts.retain(|_, counted| counted.at.elapsed() < FRESH);
        }
        counts.insert(
            agent.clone(),
            Counted {
                open,
                at: Instant::now(),
                added: 0,
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
}
