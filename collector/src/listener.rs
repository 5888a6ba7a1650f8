//! The accept loop, with bounds on what unauthenticated clients can hold.
//!
//! - At most `max_connections` connections are open; the loop stops accepting at
//!   the cap, so further clients wait in the kernel's listen backlog (no file
//!   descriptor, no task) until one closes.
//! - A request's head must arrive whole within `header_read_timeout` of its
//!   first byte (of the accept, for a connection's first request); a TLS
//!   handshake gets the same time. A slow-loris client is closed then.
//! - A keep-alive connection between requests is closed after `idle_timeout`.
//!   Separate from the header timeout on purpose: it is longer than the idle
//!   time of common client pools (reqwest/hyper and Go: 90 s), so a client never
//!   sends on a connection the server is closing at that moment (with the agent
//!   sending every 10 s, a 10 s idle close would race its sends).
//!   Both are kept by a per-connection watchdog (`Watch`): hyper's own header
//!   timer also runs while idle, so it cannot tell the two apart.
//! - A request body must arrive whole within `body_read_timeout`; a handler
//!   reading it after that gets an error (ingest answers 408).
//!
//! HTTP/1.1 only (also over TLS: the ALPN offer is `http/1.1`): agents, scripts
//! and browsers all speak it, and it keeps the one header timer meaningful.
//! Each request carries the peer address as `ConnectInfo<SocketAddr>`.
//! On shutdown the loop stops accepting, asks every connection to finish its
//! request, and waits up to [`DRAIN_TIMEOUT`] for them.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Semaphore};
use tower::Service;

use crate::live_router::LiveRouter;

/// How long shutdown waits for open connections.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The bounds of [`serve`] (`server:` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    /// A keep-alive connection with no request is closed after this.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// Accepts connections on `listener` until `shutdown` resolves and serves each
/// with `router`, over TLS when `tls` is given.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: LiveRouter,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let (stop, stopping) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: wait a little instead of spinning.
                tracing::warn!(%error, "Failed to accept a connection.");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let limits = limits.clone();
        let stopping = stopping.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tls {
                None => connection(stream, peer, router, &limits, stopping).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(stream)) => {
                            connection(stream, peer, router, &limits, stopping).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed.");
                        }
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out."),
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("Connections still open after the drain time; closing them.");
    }
    Ok(())
}

/// Where a connection is, for its deadlines.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request's head to arrive whole (from the first byte, or from
    /// the accept for a new connection): `header_read_timeout`.
    Head { since: Instant },
    /// A request is being handled (its body has its own deadline).
    Handling,
    /// Between requests, nothing read: `idle_timeout`.
    Idle { since: Instant },
}

/// The phase shared by the connection's reader, its service and its watchdog.
#[derive(Debug)]
struct Watch(Mutex<Phase>);

impl Watch {
    fn set(&self, phase: Phase) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = phase;
    }

    /// Bytes arrived: a connection between requests starts reading a head.
    fn read_some(&self) {
        let mut phase = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Phase::Idle { .. } = *phase {
            *phase = Phase::Head {
                since: Instant::now(),
            };
        }
    }

    /// When the connection is to be closed, if nothing changes meanwhile.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        match *self.0.lock().unwrap_or_else(PoisonError::into_inner) {
            Phase::Head { since } => Some(since + limits.header_read_timeout),
            Phase::Handling => None,
            Phase::Idle { since } => Some(since + limits.idle_timeout),
        }
    }
}

/// The connection's stream, telling its [`Watch`] when bytes arrive.
struct WatchedIo<S> {
    inner: S,
    watch: Arc<Watch>,
}

impl<S: AsyncRead + Unpin> AsyncRead for WatchedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(context, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.read_some();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WatchedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(context, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(context, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The watchdog checks at least this often (a phase change may bring its
/// deadline closer).
const WATCH_TICK: Duration = Duration::from_millis(250);

/// Serves one connection until it closes, misses a deadline, or shutdown asks it
/// to end.
async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    router: LiveRouter,
    limits: &ConnectionLimits,
    mut stopping: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watch = Arc::new(Watch(Mutex::new(Phase::Head {
        since: Instant::now(),
    })));
    let body_timeout = limits.body_read_timeout;
    let service_watch = Arc::clone(&watch);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        service_watch.set(Phase::Handling);
        let watch = Arc::clone(&service_watch);
        let mut router = router.clone();
        let mut request = request.map(|body| Body::new(DeadlineBody::new(body, body_timeout)));
        request.extensions_mut().insert(ConnectInfo(peer));
        async move {
            let response = router.call(request).await;
            watch.set(Phase::Idle {
                since: Instant::now(),
            });
            response
        }
    });
    let io = WatchedIo {
        inner: stream,
        watch: Arc::clone(&watch),
    };
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let mut asked_to_stop = *stopping.borrow();
    if asked_to_stop {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        let now = Instant::now();
        let deadline = watch.deadline(limits);
        if deadline.is_some_and(|deadline| deadline <= now) {
            tracing::debug!(%peer, "Closing a connection that missed its header or idle deadline.");
            return;
        }
        let wake = deadline.map_or(now + WATCH_TICK, |deadline| deadline.min(now + WATCH_TICK));
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "Connection ended with an error.");
                }
                return;
            }
            changed = stopping.changed(), if !asked_to_stop => {
                asked_to_stop = true;
                if changed.is_ok() {
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {}
        }
    }
}

/// The body read did not finish within `server.body_read_timeout_secs`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub struct BodyTimeout(pub Duration);

/// A request body that fails once its deadline (set when the request arrived) passes.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

impl DeadlineBody {
    fn new(inner: Incoming, limit: Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            limit,
        }
    }
}

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.inner.is_end_stream() {
            return Poll::Ready(None);
        }
        if self.deadline.as_mut().poll(context).is_ready() {
            let limit = self.limit;
            return Poll::Ready(Some(Err(Box::new(BodyTimeout(limit)))));
        }
        Pin::new(&mut self.inner)
            .poll_frame(context)
            .map_err(|error| -> axum::BoxError { Box::new(error) })
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `error` (or one of its causes) is a [`BodyTimeout`].
pub fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if cause.is::<BodyTimeout>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// The TLS acceptor for `config`, offering HTTP/1.1 only.
pub fn tls_acceptor(config: &rustls::ServerConfig) -> tokio_rustls::TlsAcceptor {
    let mut config = config.clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
