//! Which agents have an inbox stream open, when each was last seen, and how
//! to wake an agent's streams when something arrives for it.
//!
//! Presence lives in memory: after a restart every agent is offline until
//! it reconnects. With several nodes on one store, each node publishes its
//! own to the store ([`publish`]) and merges the others' into what it
//! answers.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use foldhash::HashMap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::domain::{AgentId, Timestamp};
use crate::store::{AgentPresence, Store};

/// How often changes are published to a shared store.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// How long a published "online" holds unless published again: a node
/// that dies stops refreshing it, and its agents go offline after this.
const ALIVE_FOR: Duration = Duration::from_secs(15);
/// How often every online agent is published again, well within
/// [`ALIVE_FOR`].
const REFRESH_EVERY: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct Presence {
    agents: Mutex<HashMap<AgentId, Entry>>,
}

#[derive(Default)]
struct Entry {
    streams: usize,
    wake: Arc<Notify>,
    /// Acks: only streams with a prefetch limit wait for these.
    acked: Arc<Notify>,
    last_seen: Option<Timestamp>,
    /// Changed since last published.
    changed: bool,
}

impl Presence {
    fn lock(&self) -> MutexGuard<'_, HashMap<AgentId, Entry>> {
        self.agents.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What an agent's streams wait on: work, and acks.
    pub fn wakers(&self, agent: &AgentId) -> (Arc<Notify>, Arc<Notify>) {
        let mut agents = self.lock();
        let entry = agents.entry(agent.clone()).or_default();
        (entry.wake.clone(), entry.acked.clone())
    }

    /// Wakes every stream of `agent` that is waiting: a message arrived or
    /// became due, or the agent was unregistered.
    pub fn wake(&self, agent: &AgentId) {
        if let Some(entry) = self.lock().get(agent) {
            entry.wake.notify_waiters();
        }
    }

    /// Wakes every waiting stream: changes may have been missed.
    pub fn wake_all(&self) {
        for entry in self.lock().values() {
            entry.wake.notify_waiters();
            entry.acked.notify_waiters();
        }
    }

    /// Wakes the streams of `agent` waiting at their prefetch limit.
    pub fn acked(&self, agent: &AgentId) {
        if let Some(entry) = self.lock().get(agent) {
            entry.acked.notify_waiters();
        }
    }

    pub fn connect(&self, agent: &AgentId) {
        let mut agents = self.lock();
        let entry = agents.entry(agent.clone()).or_default();
        entry.streams += 1;
        entry.last_seen = Some(Timestamp::now());
        entry.changed = true;
    }

    pub fn disconnect(&self, agent: &AgentId) {
        if let Some(entry) = self.lock().get_mut(agent) {
            entry.streams = entry.streams.saturating_sub(1);
            entry.last_seen = Some(Timestamp::now());
            entry.changed = true;
        }
    }

    pub fn touch(&self, agent: &AgentId) {
        let mut agents = self.lock();
        let entry = agents.entry(agent.clone()).or_default();
        entry.last_seen = Some(Timestamp::now());
        entry.changed = true;
    }

    /// What changed since the last call, and with `everyone` every agent
    /// online here too; marks it published.
    fn changes(&self, everyone: bool) -> Vec<AgentPresence> {
        let mut agents = self.lock();
        agents
            .iter_mut()
            .filter(|(_, entry)| entry.changed || (everyone && entry.streams > 0))
            .map(|(agent_id, entry)| {
                entry.changed = false;
                AgentPresence {
                    agent_id: agent_id.clone(),
                    online: entry.streams > 0,
                    last_seen: entry.last_seen,
                }
            })
            .collect()
    }

    /// This node's view of `agent` merged with what other nodes published.
    pub fn merged(&self, agent: &AgentId, published: Option<&AgentPresence>) -> (bool, Option<Timestamp>) {
        let (online, last_seen) = (self.is_online(agent), self.last_seen(agent));
        match published {
            Some(other) => (online || other.online, last_seen.max(other.last_seen)),
            None => (online, last_seen),
        }
    }

    pub fn is_online(&self, agent: &AgentId) -> bool {
        self.lock().get(agent).is_some_and(|e| e.streams > 0)
    }

    pub fn last_seen(&self, agent: &AgentId) -> Option<Timestamp> {
        self.lock().get(agent).and_then(|e| e.last_seen)
    }
}

/// Publishes this node's presence to a store shared with other nodes until
/// `shutdown`: changes every [`PUBLISH_EVERY`], every online agent again
/// every [`REFRESH_EVERY`]. A failure is retried with the next round (the
/// changes are kept).
pub async fn publish(presence: Arc<Presence>, store: Arc<dyn Store>, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(PUBLISH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut refreshed = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let everyone = refreshed.elapsed() >= REFRESH_EVERY;
        let changes = presence.changes(everyone);
        if changes.is_empty() {
            continue;
        }
        match store.publish_presence(&changes, ALIVE_FOR).await {
            Ok(()) if everyone => refreshed = tokio::time::Instant::now(),
            Ok(()) => {}
            Err(error) => {
                tracing::warn!(%error, "publishing presence to the store failed; retrying");
                let mut agents = presence.lock();
                for change in changes {
                    if let Some(entry) = agents.get_mut(&change.agent_id) {
                        entry.changed = true;
                    }
                }
            }
        }
    }
}
