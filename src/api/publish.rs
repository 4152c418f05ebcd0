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

use std::sync::Arc;

use futures_util::stream::FuturesOrdered;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

use super::{Api, Caller, ItemStream};
use crate::domain::{Error, Result};
use crate::pb;

/// Messages a stream reads ahead of the results it has sent.
pub const PUBLISH_WINDOW: usize = 1024;
/// Results waiting for the client to read them.
const RESULT_BUFFER: usize = 64;

impl Api {
    pub fn publish_messages(
        self: &Arc<Self>,
        caller: &Caller,
        requests: ItemStream<pb::PublishMessagesRequest>,
    ) -> ItemStream<pb::PublishMessagesResponse> {
        let (results, answers) = mpsc::channel(RESULT_BUFFER);
        tokio::spawn(self.clone().publish(caller.clone(), requests, results));
        self.guard(caller, Box::pin(ReceiverStream::new(answers)))
    }

    async fn publish(
        self: Arc<Self>,
        caller: Caller,
        mut requests: ItemStream<pb::PublishMessagesRequest>,
        results: mpsc::Sender<Result<pb::PublishMessagesResponse>>,
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
                    let answer = pb::PublishMessagesResponse { result: Some(result) };
                    if !gone && results.send(Ok(answer)).await.is_err() {
                        gone = true;
                        reading = false;
                    }
                }
                () = results.closed(), if !gone => {
                    gone = true;
                    reading = false;
                }
                request = requests.next(), if reading && in_flight.len() < PUBLISH_WINDOW => match request {
                    Some(Ok(request)) => in_flight.push_back(self.send_one(&caller, request.message)),
                    // A request that cannot be read (too large, not
                    // protobuf) ends the stream after the results before it.
                    Some(Err(error)) => {
                        reading = false;
                        ending = Some(error);
                    }
                    // Half-closed: the remaining results, then the end.
                    None => reading = false,
                },
            }
        }
        if let (Some(error), false) = (ending, gone) {
            let _ = results.send(Err(error)).await;
        }
    }
}
