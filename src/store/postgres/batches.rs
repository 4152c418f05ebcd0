//! Writes that queue for a shared statement ([`super::inserts`],
//! [`super::updates`]): a dispatcher takes everything queued into a batch
//! as soon as one of a few batch slots is free. Alone, a write is a batch
//! of one and waits for nothing; under load, writes that arrive while the
//! slots are busy share the next batch.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot};

use super::cluster::Cluster;
use crate::domain::message::MessageId;
use crate::store::{MessageWrite, StoreError};

/// A write of one message waiting for its batch.
pub(super) struct Pending {
    pub(super) write: MessageWrite,
    /// The record's JSON body.
    pub(super) body: String,
    /// Sent to the other nodes once committed.
    pub(super) notices: Vec<String>,
    pub(super) answer: oneshot::Sender<Result<(), StoreError>>,
}

impl Pending {
    /// Answers the write's caller, and once it is committed tells the other
    /// nodes.
    pub(super) fn finish(self, cluster: &Cluster, outcome: Result<(), StoreError>) {
        if outcome.is_ok() {
            cluster.notify(self.notices);
        }
        // A caller that gave up is not waiting: its write is made anyway.
        let _ = self.answer.send(outcome);
    }
}

/// Where writes queue for their batch.
pub(super) type Queue = mpsc::UnboundedSender<Pending>;

/// Starts taking batches of at most `max_batch` off the returned queue and
/// handing each to `run`, with at most `slots` batches running at a time
/// (each holds a connection while it runs). Stops when the queue's senders
/// are gone; writes queued by then are still run.
pub(super) fn start<F, Fut>(slots: usize, max_batch: usize, run: F) -> Queue
where
    F: Fn(Vec<Pending>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (queue, queued) = mpsc::unbounded_channel();
    tokio::spawn(dispatch(queued, Arc::new(Semaphore::new(slots.max(1))), max_batch, run));
    queue
}

async fn dispatch<F, Fut>(mut queued: mpsc::UnboundedReceiver<Pending>, slots: Arc<Semaphore>, max_batch: usize, run: F)
where
    F: Fn(Vec<Pending>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    // Writes whose id was already in the batch being made: the next one
    // takes them first.
    let mut held: VecDeque<Pending> = VecDeque::new();
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match held.pop_front() {
            Some(write) => write,
            None => match queued.recv().await {
                Some(write) => write,
                None => return,
            },
        };
        let mut ids: HashSet<MessageId> = HashSet::from([first.write.record.id().clone()]);
        let mut batch = vec![first];
        let mut later = VecDeque::new();
        let mut from_held = held.len();
        while batch.len() < max_batch {
            let next = if from_held > 0 {
                from_held -= 1;
                held.pop_front()
            } else {
                queued.try_recv().ok()
            };
            let Some(write) = next else { break };
            // Two writes of one message never share a batch: the second
            // waits for the next, so each batch's answer for an id is
            // unambiguous.
            if ids.insert(write.write.record.id().clone()) {
                batch.push(write);
            } else {
                later.push_back(write);
            }
        }
        later.extend(held.drain(..));
        held = later;
        let running = run(batch);
        tokio::spawn(async move {
            running.await;
            drop(slot);
        });
    }
}
