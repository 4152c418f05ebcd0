//! Changes other nodes committed, turned into wake-ups of this node's inbox
//! streams and SYNC senders (a store shared by several nodes sends them;
//! see `store::postgres::cluster`).

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::mpsc::error::TrySendError;

use super::*;
use crate::store::Signal;

/// Offers taken together, at most.
const MAX_OFFERS: usize = 256;

/// Offers waiting for their claims, at most; past that, an offer only
/// wakes its recipient's streams.
const MAX_PENDING_OFFERS: usize = 4096;

impl Messaging {
    /// Acts on `signals` until `shutdown`.
    pub async fn follow_signals(
        self: Arc<Self>,
        mut signals: broadcast::Receiver<Signal>,
        shutdown: CancellationToken,
    ) {
        // Ends once `offers` is dropped, when this returns.
        let (offers, offered) = mpsc::channel(MAX_PENDING_OFFERS);
        tokio::spawn(self.clone().take_offers(offered));
        loop {
            let signal = tokio::select! {
                () = shutdown.cancelled() => return,
                signal = signals.recv() => signal,
            };
            match signal {
                Ok(Signal::Work(agent)) => self.presence.wake(&agent),
                Ok(Signal::Offer(record)) => {
                    // Claims falling behind: the streams read the inbox.
                    if let Err(TrySendError::Full(record)) = offers.try_send(record) {
                        self.presence.wake(&record.recipient);
                    }
                }
                Ok(Signal::Room(agent)) => self.presence.acked(&agent),
                Ok(Signal::Reply(original)) => self.reply_stored(&original).await,
                Ok(Signal::Resync) | Err(RecvError::Lagged(_)) => {
                    self.presence.wake_all();
                    let waiting: Vec<MessageId> = self.lock_replies().keys().cloned().collect();
                    for original in waiting {
                        self.reply_stored(&original).await;
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Claims the messages other nodes queued for the streams of this node
    /// that wait with nothing to deliver, and hands them over: one claim
    /// each (written together where the store groups concurrent writes)
    /// and no inbox read. Offers are taken in the order they arrive, which
    /// is the order their sends committed, and handed over in that order.
    /// A message no stream here waits for, or that is not deliverable yet,
    /// wakes its recipient's streams instead, as does one whose claim fails
    /// (another stream claimed it first, or it changed since): they read
    /// the inbox, where order is by priority.
    async fn take_offers(self: Arc<Self>, mut offered: mpsc::Receiver<Box<MessageRecord>>) {
        let mut batch = Vec::new();
        while offered.recv_many(&mut batch, MAX_OFFERS).await > 0 {
            let now = self.tick();
            let mut claims = Vec::with_capacity(batch.len());
            for record in batch.drain(..) {
                let deliverable = record.available_at <= now && record.expires_at > now;
                match self.waiting_stream(&record.recipient) {
                    Some(stream) if deliverable => {
                        let claimed = self.claimed(&record, now);
                        claims.push((stream, swap(&record, claimed)));
                    }
                    _ => self.presence.wake(&record.recipient),
                }
            }
            let leased =
                futures_util::future::join_all(claims.iter().map(|(_, claim)| self.store.lease(vec![claim.clone()])));
            for ((stream, claim), leased) in claims.into_iter().zip(leased.await) {
                match leased {
                    Ok(()) => self.hand_over(stream, claim.record, HandedFrom::Offer).await,
                    Err(error) => {
                        if !matches!(error, StoreError::Conflict { .. } | StoreError::NotFound(_)) {
                            tracing::warn!(%error, message_id = %claim.record.id(), "claiming a message another node offered failed");
                        }
                        self.presence.wake(&claim.record.recipient);
                    }
                }
            }
        }
    }

    /// A reply to `original` was stored elsewhere: hands it to the SYNC
    /// senders waiting here, if any.
    async fn reply_stored(&self, original: &MessageId) {
        if !self.lock_replies().contains_key(original) {
            return;
        }
        let reply = match self.store.get_message(original).await {
            Ok(Some(record)) => self.stored_reply(&record).await,
            Ok(None) => Ok(None),
            Err(e) => Err(e.into()),
        };
        match reply {
            Ok(Some(reply)) => self.fulfil_reply(original, &reply),
            Ok(None) => {}
            // The waiter reads the store again as its wait ends.
            Err(error) => {
                tracing::warn!(%error, message_id = %original, "reading a reply stored by another node failed")
            }
        }
    }
}
