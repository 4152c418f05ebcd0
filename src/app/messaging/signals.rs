//! Changes other nodes committed, turned into wake-ups of this node's inbox
//! streams and SYNC senders (a store shared by several nodes sends them;
//! see `store::postgres::cluster`).

use tokio::sync::broadcast::{self, error::RecvError};

use super::*;
use crate::store::Signal;

impl Messaging {
    /// Acts on `signals` until `shutdown`.
    pub async fn follow_signals(
        self: Arc<Self>,
        mut signals: broadcast::Receiver<Signal>,
        shutdown: CancellationToken,
    ) {
        loop {
            let signal = tokio::select! {
                () = shutdown.cancelled() => return,
                signal = signals.recv() => signal,
            };
            match signal {
                Ok(Signal::Work(agent)) => self.presence.wake(&agent),
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
