//! The accept loop: connection limits that hold under a flood of idle or
//! slow clients.
//!
//! - At most `max_connections` connections are open. At the cap, the oldest
//!   connection that has not yet sent a complete request is closed to make
//!   room (a flood of silent sockets cannot lock out a health probe); when
//!   every connection has sent one, the new connection is closed at once.
//! - A connection must send its first complete request head (HTTP/1.1
//!   headers, or the HTTP/2 preface, both ending in an empty line) within
//!   `header_read_timeout`, or it is closed. Later requests on an HTTP/1.1
//!   connection fall under hyper's own header timeout.
//! - An accept error (such as running out of file descriptors) pauses
//!   accepting briefly instead of spinning.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tokio_stream::Stream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// File descriptors kept for the store, logs and the listener itself when
/// the connection cap is derived from the descriptor limit.
const RESERVED_DESCRIPTORS: u64 = 64;
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

/// Raises the soft limit of open files to the hard limit and returns the
/// connection cap that fits in it: `wanted`, or less when descriptors are
/// short (logged).
pub fn fit_descriptor_limit(wanted: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let raised = rustix::process::Rlimit {
        current: before.maximum,
        maximum: before.maximum,
    };
    let soft = match setrlimit(Resource::Nofile, raised) {
        Ok(()) => before.maximum,
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open-file limit");
            before.current
        }
    };
    let show = |limit: Option<u64>| limit.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    tracing::info!(
        soft_before = show(before.current),
        soft = show(soft),
        hard = show(before.maximum),
        "open-file limit"
    );
    let room = soft.map_or(usize::MAX, |n| {
        usize::try_from(n.saturating_sub(RESERVED_DESCRIPTORS)).unwrap_or(usize::MAX)
    });
    if room < wanted {
        tracing::warn!(
            max_connections = wanted,
            fits = room,
            "the open-file limit leaves room for fewer connections than max_connections; capping"
        );
    }
    wanted.min(room).max(1)
}

/// Connections accepted from `listener` under `limits`, for tonic's
/// `serve_with_incoming_shutdown`.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
) -> impl Stream<Item = Result<LimitedStream, io::Error>> + Send + 'static {
    let tracker = Arc::new(Tracker::default());
    async_stream::stream! {
        let mut last_error_log: Option<Instant> = None;
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    if last_error_log.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
                        tracing::warn!(%error, "accepting a connection failed; pausing briefly");
                        last_error_log = Some(Instant::now());
                    }
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            if tracker.open.load(Ordering::Relaxed) >= limits.max_connections && !tracker.evict_one() {
                tracker.refused(limits.max_connections);
                drop(stream);
                continue;
            }
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
            yield Ok(LimitedStream::new(stream, &tracker, limits.header_read_timeout));
        }
    }
}

/// Open connections, and those still waiting for their first request,
/// oldest first (entries of closed or served connections are skipped).
#[derive(Default)]
struct Tracker {
    open: AtomicUsize,
    waiting: Mutex<VecDeque<Weak<Waiting>>>,
    refused: AtomicU64,
    last_refusal_log: Mutex<Option<Instant>>,
}

impl Tracker {
    /// Closes the oldest connection that has not sent a request yet.
    fn evict_one(&self) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(entry) = waiting.pop_front() {
            if let Some(connection) = entry.upgrade()
                && !connection.served.load(Ordering::Relaxed)
                && !connection.evict.is_cancelled()
            {
                connection.evict.cancel();
                return true;
            }
        }
        false
    }

    fn track(&self, connection: &Arc<Waiting>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        // Keep the queue from filling with entries of connections long gone.
        if waiting.len() >= 1024 && waiting.len().is_power_of_two() {
            waiting.retain(|entry| entry.strong_count() > 0);
        }
        waiting.push_back(Arc::downgrade(connection));
    }

    fn refused(&self, max_connections: usize) {
        let total = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last_refusal_log.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|at| at.elapsed() >= LOG_EVERY) {
            tracing::warn!(
                max_connections,
                refused_total = total,
                "connection limit reached and every connection is in use; closing new connections"
            );
            *last = Some(Instant::now());
        }
    }
}

/// A connection that has not yet sent its first complete request.
struct Waiting {
    served: AtomicBool,
    evict: CancellationToken,
}

/// The end of an HTTP/1.1 request head and of the HTTP/2 preface.
const HEAD_END: &[u8] = b"\r\n\r\n";

/// A TCP connection counted against the cap, closed (by a read error) if
/// its first request head does not arrive in time or it is evicted first.
pub struct LimitedStream {
    inner: TcpStream,
    tracker: Arc<Tracker>,
    /// Until the first request head is complete.
    first_request: Option<FirstRequest>,
}

struct FirstRequest {
    state: Arc<Waiting>,
    deadline: Pin<Box<Sleep>>,
    evicted: Pin<Box<WaitForCancellationFutureOwned>>,
    /// How many bytes of [`HEAD_END`] the bytes read so far end with.
    matched: usize,
}

impl LimitedStream {
    fn new(inner: TcpStream, tracker: &Arc<Tracker>, header_read_timeout: Duration) -> Self {
        tracker.open.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(Waiting {
            served: AtomicBool::new(false),
            evict: CancellationToken::new(),
        });
        tracker.track(&state);
        Self {
            inner,
            tracker: tracker.clone(),
            first_request: Some(FirstRequest {
                evicted: Box::pin(state.evict.clone().cancelled_owned()),
                state,
                deadline: Box::pin(tokio::time::sleep(header_read_timeout)),
                matched: 0,
            }),
        }
    }
}

impl Drop for LimitedStream {
    fn drop(&mut self) {
        self.tracker.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl FirstRequest {
    /// Feeds bytes read; true once they complete a request head.
    fn complete_after(&mut self, bytes: &[u8]) -> bool {
        for &byte in bytes {
            self.matched = if byte == HEAD_END[self.matched] {
                self.matched + 1
            } else if byte == HEAD_END[0] {
                1
            } else {
                0
            };
            if self.matched == HEAD_END.len() {
                return true;
            }
        }
        false
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let filled = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        let Some(first) = &mut this.first_request else {
            return result;
        };
        match result {
            Poll::Ready(Ok(())) => {
                if first.complete_after(&buf.filled()[filled..]) {
                    first.state.served.store(true, Ordering::Relaxed);
                    this.first_request = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                if first.evicted.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "closed to make room: connection limit reached before this connection sent a request",
                    )));
                }
                if first.deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no complete request within the header read timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl Connected for LimitedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first() -> FirstRequest {
        let state = Arc::new(Waiting {
            served: AtomicBool::new(false),
            evict: CancellationToken::new(),
        });
        FirstRequest {
            evicted: Box::pin(state.evict.clone().cancelled_owned()),
            state,
            deadline: Box::pin(tokio::time::sleep(Duration::from_secs(1))),
            matched: 0,
        }
    }

    #[tokio::test]
    async fn a_request_head_completes_across_reads() {
        let mut head = first();
        assert!(!head.complete_after(b"GET /health HTTP/1.1\r\nHost: x\r"));
        assert!(!head.complete_after(b"\n\r"));
        assert!(head.complete_after(b"\n"));
        let mut preface = first();
        assert!(preface.complete_after(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        let mut partial = first();
        assert!(!partial.complete_after(b"GET / HTTP/1.1\r\n\r\r\n"));
    }
}
