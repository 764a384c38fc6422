//! The admin server's listener: a bounded number of connections, a share
//! of them per client address, each closed when it sends nothing for a
//! while or has lived long enough. Admin requests are small and answered
//! at once, so a connection that dribbles a request (slowloris) or sits
//! idle costs a slot for seconds, not forever; past the maximum, or past
//! its address's share, a new connection is closed at once.
//!
//! Why a share per address, and not a deadline for a request's headers or
//! health on a listener of its own: whoever reaches the admin port can
//! open connections faster than any deadline closes them, so a deadline
//! alone still lets one client hold every slot; a second listener is one
//! more port for every probe, manifest and firewall rule to know. With a
//! share, one address (a pod that reaches the port, a misbehaving scraper)
//! holds at most [`MAX_CONNECTIONS_PER_CLIENT`] slots and the kubelet's
//! probe, Prometheus and `sextant status` find the others free.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use sextant_xds::server::limits::{Refused, Slot, Slots};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tracing::warn;

/// Admin connections open at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Admin connections one client address may hold at once. A scraper, a
/// probe or the CLI uses one or two.
pub const MAX_CONNECTIONS_PER_CLIENT: usize = 8;
/// A connection that sends nothing for this long is closed (a scraper's
/// keep-alive connection reconnects; it costs a handshake).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// No admin connection lives longer than this.
pub const MAX_LIFETIME: Duration = Duration::from_secs(60);

/// Counters of the admin listener, for `/metrics`.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections closed at once because the maximum was open.
    pub refused_total: AtomicU64,
    /// Connections closed by the idle timeout or the maximum lifetime.
    pub timed_out_total: AtomicU64,
}

/// A [`TcpListener`] with the bounds above.
pub struct AdminListener {
    listener: TcpListener,
    slots: Arc<Slots>,
    stats: Arc<ListenerStats>,
}

impl AdminListener {
    /// Bounds `listener`, counting into `stats`.
    pub fn new(listener: TcpListener, stats: Arc<ListenerStats>) -> Self {
        AdminListener {
            listener,
            slots: Slots::new(MAX_CONNECTIONS, MAX_CONNECTIONS_PER_CLIENT),
            stats,
        }
    }
}

impl axum::serve::Listener for AdminListener {
    type Io = Bounded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Bounded, SocketAddr) {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "cannot accept an admin connection; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let slot = match self.slots.take(peer.ip()) {
                Ok(slot) => slot,
                Err(why) => {
                    let n = self.stats.refused_total.fetch_add(1, Ordering::Relaxed) + 1;
                    if n.is_power_of_two() {
                        match why {
                            Refused::Full => warn!(%peer, refused = n, max = MAX_CONNECTIONS,
                                "admin connection refused: the maximum is open"),
                            Refused::Share => {
                                warn!(%peer, refused = n, per_client = MAX_CONNECTIONS_PER_CLIENT,
                                "admin connection refused: this address holds its share")
                            }
                        }
                    }
                    continue;
                }
            };
            let now = Instant::now();
            let io = Bounded {
                io: stream,
                _slot: slot,
                idle: Box::pin(tokio::time::sleep_until(now + IDLE_TIMEOUT)),
                end: now + MAX_LIFETIME,
                stats: self.stats.clone(),
            };
            return (io, peer);
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// An admin connection: closed with an error once idle or too old.
pub struct Bounded {
    io: TcpStream,
    _slot: Slot,
    /// Fires at the idle deadline, or at the end of life if that is sooner.
    idle: Pin<Box<Sleep>>,
    end: Instant,
    stats: Arc<ListenerStats>,
}

impl Bounded {
    /// Called when an operation is pending: an error once a deadline passed.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if self.idle.as_mut().poll(cx).is_ready() {
            self.stats.timed_out_total.fetch_add(1, Ordering::Relaxed);
            return Some(io::Error::new(
                io::ErrorKind::TimedOut,
                "admin connection idle or too old",
            ));
        }
        None
    }
}

impl AsyncRead for Bounded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                let next = (Instant::now() + IDLE_TIMEOUT).min(this.end);
                this.idle.as_mut().reset(next);
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.expired(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
            other => other,
        }
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Pending => match this.expired(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
            other => other,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
