//! Which agents have an inbox stream open, when each was last seen, and how
//! to wake an agent's streams when something arrives for it.
//!
//! Presence lives in this process only: after a restart every agent is
//! offline until it reconnects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::domain::{AgentId, Timestamp};

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
    }

    pub fn disconnect(&self, agent: &AgentId) {
        if let Some(entry) = self.lock().get_mut(agent) {
            entry.streams = entry.streams.saturating_sub(1);
            entry.last_seen = Some(Timestamp::now());
        }
    }

    pub fn touch(&self, agent: &AgentId) {
        self.lock().entry(agent.clone()).or_default().last_seen = Some(Timestamp::now());
    }

    pub fn is_online(&self, agent: &AgentId) -> bool {
        self.lock().get(agent).is_some_and(|e| e.streams > 0)
    }

    pub fn last_seen(&self, agent: &AgentId) -> Option<Timestamp> {
        self.lock().get(agent).and_then(|e| e.last_seen)
    }
}
