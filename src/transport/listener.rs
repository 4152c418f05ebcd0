//! The accept loop: connection limits that hold under a flood of idle or
//! slow clients.
//!
//! - At most `max_connections` connections are open. At the cap, the oldest
//!   connection that has not yet delivered a request is closed to make
//!   room (a flood of silent sockets cannot lock out a health probe); when
//!   every connection has sent one, the new connection is closed at once.
//! - A connection must deliver its first request (HTTP/1.1 or HTTP/2) within
//!   `header_read_timeout`, or it is closed: [`first_request_arrived`], a
//!   `map_request` layer, marks it when the request reaches the router.
//!   Later requests on an HTTP/1.1 connection fall under hyper's own header
//!   timeout; an HTTP/2 connection stays open between calls.
//! - An accept error (such as running out of file descriptors) pauses
//!   accepting briefly instead of spinning.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};

use x509_parser::extensions::GeneralName;

use super::tls::Tls;
use crate::domain::AgentId;

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
    // An unlimited hard limit cannot be the soft one (Linux caps it at
    // nr_open, macOS at OPEN_MAX); ask for plenty instead.
    const PLENTY: u64 = 1 << 20;
    let before = getrlimit(Resource::Nofile);
    let target = Some(before.maximum.unwrap_or(PLENTY));
    let raised = rustix::process::Rlimit {
        current: target,
        maximum: before.maximum,
    };
    let soft = match setrlimit(Resource::Nofile, raised) {
        Ok(()) => target,
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

/// Connections accepted from `listener` under `limits`, after their TLS
/// handshake when `tls` is set, for tonic's `serve_with_incoming_shutdown`.
/// Accepting runs on a task of its own, so a slow handshake holds up no
/// other client; it stops (closing the listening socket) when the stream
/// is dropped.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    tls: Option<Arc<Tls>>,
) -> impl Stream<Item = Result<Connection, io::Error>> + Send + 'static {
    let (ready, connections) = mpsc::channel(64);
    tokio::spawn(accept(listener, limits, tls, ready));
    ReceiverStream::new(connections)
}

async fn accept(
    listener: TcpListener,
    limits: ConnectionLimits,
    tls: Option<Arc<Tls>>,
    ready: mpsc::Sender<Result<Connection, io::Error>>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    // Connections still waiting for their first request, oldest first
    // (entries of closed or served ones are skipped when met).
    let mut waiting: VecDeque<Weak<Waiting>> = VecDeque::new();
    let mut refused: u64 = 0;
    let mut last_log: Option<Instant> = None;
    let mut log_now = || {
        let due = last_log.is_none_or(|at| at.elapsed() >= LOG_EVERY);
        if due {
            last_log = Some(Instant::now());
        }
        due
    };
    loop {
        let accepted = tokio::select! {
            () = ready.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                if log_now() {
                    tracing::warn!(%error, "accepting a connection failed; pausing briefly");
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= limits.max_connections && !evict_oldest(&mut waiting) {
            refused += 1;
            if log_now() {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    refused_total = refused,
                    "connection limit reached and every connection is in use; closing new connections"
                );
            }
            drop(stream);
            continue;
        }
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let connection = LimitedStream::new(stream, &open, limits.header_read_timeout);
        if waiting.len() > 2 * limits.max_connections {
            waiting.retain(|entry| entry.upgrade().is_some_and(|w| w.is_waiting()));
        }
        waiting.push_back(Arc::downgrade(&connection.state));
        match &tls {
            None => {
                if ready.send(Ok(Connection::Plain(connection))).await.is_err() {
                    return;
                }
            }
            // The handshake reads through the LimitedStream: the header
            // read timeout and eviction cover a client that stalls in it.
            // The deadline and eviction also bound a handshake stalled on
            // writing, which the stream's reads would not notice.
            Some(tls) => {
                let (acceptor, ready) = (tls.acceptor(), ready.clone());
                let evicted = connection.state.evict.clone();
                let deadline = limits.header_read_timeout;
                tokio::spawn(async move {
                    let handshake = tokio::select! {
                        result = tokio::time::timeout(deadline, acceptor.accept(connection)) => result,
                        () = evicted.cancelled() => return,
                        () = ready.closed() => return,
                    };
                    match handshake {
                        Ok(Ok(stream)) => {
                            let _ = ready.send(Ok(Connection::Tls(Box::new(stream)))).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake did not finish within the header read timeout"),
                    }
                });
            }
        }
    }
}

/// An accepted connection, in the clear or over TLS.
pub enum Connection {
    Plain(LimitedStream),
    Tls(Box<tokio_rustls::server::TlsStream<LimitedStream>>),
}

macro_rules! delegate {
    ($self:ident, $stream:ident => $call:expr) => {
        match $self.get_mut() {
            Connection::Plain($stream) => {
                let $stream = Pin::new($stream);
                $call
            }
            Connection::Tls($stream) => {
                let $stream = Pin::new($stream.as_mut());
                $call
            }
        }
    };
}

impl AsyncRead for Connection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        delegate!(self, stream => stream.poll_read(cx, buf))
    }
}

impl AsyncWrite for Connection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        delegate!(self, stream => stream.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, stream => stream.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Connection::Plain(stream) => stream.is_write_vectored(),
            Connection::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, stream => stream.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, stream => stream.poll_shutdown(cx))
    }
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        match self {
            Connection::Plain(stream) => stream.connect_info(),
            Connection::Tls(stream) => {
                let (inner, session) = stream.get_ref();
                ConnectionInfo {
                    peer_agent: session
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(|cert| agent_of_certificate(cert)),
                    ..inner.connect_info()
                }
            }
        }
    }
}

/// Closes the oldest connection that has not sent a request yet.
fn evict_oldest(waiting: &mut VecDeque<Weak<Waiting>>) -> bool {
    while let Some(entry) = waiting.pop_front() {
        if let Some(connection) = entry.upgrade()
            && connection.is_waiting()
        {
            connection.evict.cancel();
            return true;
        }
    }
    false
}

/// Marks the connection of each request as having delivered one, which
/// lifts its header-read timeout and keeps it from being evicted.
pub fn first_request_arrived(request: axum::extract::Request) -> axum::extract::Request {
    if let Some(info) = request.extensions().get::<ConnectionInfo>() {
        info.first_request.served.store(true, Ordering::Relaxed);
    }
    request
}

/// The agent a verified client certificate names: the first SAN URI that
/// is an agent id (`URI:claude-code://orchestrator`).
fn agent_of_certificate(der: &[u8]) -> Option<AgentId> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let names = cert.subject_alternative_name().ok()??;
    names.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) => AgentId::parse(uri).ok(),
        _ => None,
    })
}

/// What tonic puts in each request's extensions about its connection.
#[derive(Clone)]
pub struct ConnectionInfo {
    pub tcp: TcpConnectInfo,
    /// Set when the client presented a certificate (verified against the
    /// client CA) naming an agent.
    pub peer_agent: Option<AgentId>,
    first_request: Arc<Waiting>,
}

/// Whether a connection delivered its first request yet.
struct Waiting {
    served: AtomicBool,
    evict: CancellationToken,
}

impl Waiting {
    fn is_waiting(&self) -> bool {
        !self.served.load(Ordering::Relaxed) && !self.evict.is_cancelled()
    }
}

/// A TCP connection counted against the cap, closed (by a read error) if
/// its first request head does not arrive in time or it is evicted first.
pub struct LimitedStream {
    inner: TcpStream,
    open: Arc<AtomicUsize>,
    state: Arc<Waiting>,
    /// Until the first request arrives.
    first_request: Option<FirstRequest>,
}

struct FirstRequest {
    deadline: Pin<Box<Sleep>>,
    evicted: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl LimitedStream {
    fn new(inner: TcpStream, open: &Arc<AtomicUsize>, header_read_timeout: Duration) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(Waiting {
            served: AtomicBool::new(false),
            evict: CancellationToken::new(),
        });
        Self {
            inner,
            open: open.clone(),
            first_request: Some(FirstRequest {
                evicted: Box::pin(state.evict.clone().cancelled_owned()),
                deadline: Box::pin(tokio::time::sleep(header_read_timeout)),
            }),
            state,
        }
    }
}

impl Drop for LimitedStream {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        let Some(first) = &mut this.first_request else {
            return result;
        };
        if this.state.served.load(Ordering::Relaxed) {
            this.first_request = None;
            return result;
        }
        match result {
            Poll::Ready(result) => Poll::Ready(result),
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
                        "no request within the header read timeout",
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
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        ConnectionInfo {
            tcp: self.inner.connect_info(),
            peer_agent: None,
            first_request: self.state.clone(),
        }
    }
}
