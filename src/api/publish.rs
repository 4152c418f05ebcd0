//! PublishMessages: messages stream in, results stream out in request
//! order, each once its message is durable.
//!
//! One task per stream reads requests, starts each message's send (the
//! same as one of SendMessages) and hands the results, in order, to the
//! response stream through a small channel. It reads ahead at most
//! [`PUBLISH_WINDOW`] messages: with the window full it waits for the
//! oldest result, and with the channel full (a client reading slowly) it
//! waits for the client, reading nothing meanwhile. The sends run on this
//! task rather than on the response stream, so a client that goes away
//! cancels none of them halfway (a stored message still wakes its
//! recipient); what it had sent is finished, its results dropped.
//!
//! Results go to the response stream in batches: all those ready at once
//! (after every request already received has been started). tonic encodes
//! the results it can take without waiting into one HTTP/2 frame, so a
//! batch leaves as one frame however the runtime schedules the two sides.
//! One frame per result (about 40 bytes) would cost the client far more in
//! framing than in data: h2 clients end a connection that buffers too many
//! small unread DATA frames (`ENHANCE_YOUR_CALM`, "too_many_data_frames"),
//! which a client reading slowly would meet.

use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::stream::{self, FuturesOrdered};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::{Api, Caller, ItemStream};
use crate::domain::{Error, Result};
use crate::pb;

/// Messages a stream reads ahead of the results it has sent.
pub const PUBLISH_WINDOW: usize = 1024;
/// Results sent to the response stream together, at most.
const BATCH: usize = 64;
/// Batches waiting for the client to read them.
const BATCHES_BUFFERED: usize = 2;

type Batch = Vec<Result<pb::PublishMessagesResponse>>;

impl Api {
    pub fn publish_messages(
        self: &Arc<Self>,
        caller: &Caller,
        requests: ItemStream<pb::PublishMessagesRequest>,
    ) -> ItemStream<pb::PublishMessagesResponse> {
        let (results, batches) = mpsc::channel(BATCHES_BUFFERED);
        tokio::spawn(self.clone().publish(caller.clone(), requests, results));
        let answers = futures_util::StreamExt::flat_map(ReceiverStream::new(batches), stream::iter);
        self.guard(caller, Box::pin(answers))
    }

    async fn publish(
        self: Arc<Self>,
        caller: Caller,
        mut requests: ItemStream<pb::PublishMessagesRequest>,
        results: mpsc::Sender<Batch>,
    ) {
        let mut in_flight = FuturesOrdered::new();
        let mut reading = true;
        // The client is gone: finish what it sent, answer nothing.
        let mut gone = false;
        // Sent after the last result.
        let mut ending: Option<Error> = None;
        while reading || !in_flight.is_empty() {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled(), if reading => {
                    reading = false;
                    ending = Some(Error::unavailable(
                        "the server is shutting down: the messages after the last result were not read",
                    ));
                }
                Some(result) = in_flight.next(), if !in_flight.is_empty() => {
                    let mut batch = vec![answer(result)];
                    while batch.len() < BATCH
                        && let Some(Some(result)) = in_flight.next().now_or_never()
                    {
                        batch.push(answer(result));
                    }
                    if !gone && results.send(batch).await.is_err() {
                        gone = true;
                        reading = false;
                    }
                }
                () = results.closed(), if !gone => {
                    gone = true;
                    reading = false;
                }
                request = requests.next(), if reading && in_flight.len() < PUBLISH_WINDOW => {
                    let mut request = Some(request);
                    // Every request already received, up to the window.
                    while let Some(next) = request.take() {
                        match next {
                            Some(Ok(next)) => in_flight.push_back(self.send_one(&caller, next.message)),
                            // A request that cannot be read (too large, not
                            // protobuf) ends the stream after the results
                            // before it.
                            Some(Err(error)) => {
                                reading = false;
                                ending = Some(error);
                            }
                            // Half-closed: the remaining results, then the end.
                            None => reading = false,
                        }
                        if reading && in_flight.len() < PUBLISH_WINDOW {
                            request = requests.next().now_or_never();
                        }
                    }
                }
            }
        }
        if let (Some(error), false) = (ending, gone) {
            let _ = results.send(vec![Err(error)]).await;
        }
    }
}

fn answer(result: pb::SendResult) -> Result<pb::PublishMessagesResponse> {
    Ok(pb::PublishMessagesResponse { result: Some(result) })
}
