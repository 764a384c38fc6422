//! What a TCP connection may cost before and while it speaks xDS: a bounded
//! number of them, a share of that number per client address, each with a
//! deadline for its HTTP/2 preface.
//!
//! Streams per connection are bounded by HTTP/2 itself
//! (`SETTINGS_MAX_CONCURRENT_STREAMS`, see [`super::ServerConfig`]), and a
//! connection that stops answering HTTP/2 pings is closed by the keepalive.
//! What HTTP/2 cannot see is the connection that never starts: this module
//! closes it after the handshake timeout, and refuses connections beyond
//! the maximum at once, so that silent sockets cannot use up the process's
//! file descriptors and lock out proxies, the admin port and the registries.
//! One client address holds at most its share of the maximum, so that a
//! source opening silent connections as fast as they are closed fills its
//! own share and never the slots of every other proxy.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::warn;

use super::Metrics;

/// The HTTP/2 client preface: what a client must send first.
const PREFACE_LEN: usize = 24;

/// File descriptors kept for everything but xDS connections when the
/// maximum is derived from the process's limit: the admin server's
/// connections (at most 64), registry clients, watched files, logs.
pub const RESERVED_FDS: usize = 256;

/// The default maximum of xDS connections: the process's open-file limit
/// less [`RESERVED_FDS`], at least 16. Read from `/proc/self/limits`;
/// 65,536 where that cannot be read.
pub fn default_max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|v| v.parse::<usize>().ok());
    match soft {
        Some(n) => n.saturating_sub(RESERVED_FDS).max(16),
        None => 65_536,
    }
}

/// The default share of one client address: a quarter of `max`, at least
/// one. A proxy opens one connection (two while it reconnects); a quarter
/// leaves three quarters to everyone else whatever one address does.
pub fn default_max_connections_per_client(max: usize) -> usize {
    (max / 4).max(1)
}

/// What one listener's connections may take.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Connections open at once.
    pub max: usize,
    /// Connections one client address may hold at once.
    pub per_client: usize,
    /// How long a new connection has to send its HTTP/2 preface.
    pub handshake: Duration,
}

/// The connection slots of one listener: `max` in all, `per_client` for
/// one client address. The admin server's listener uses them too.
pub struct Slots {
    all: Arc<Semaphore>,
    per_client: usize,
    by_client: Mutex<HashMap<IpAddr, usize>>,
}

/// Why a connection got no slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Every slot is taken.
    Full,
    /// Its address holds its share.
    Share,
}

impl Slots {
    /// `max` slots, at most `per_client` (at least one) for one address.
    pub fn new(max: usize, per_client: usize) -> Arc<Slots> {
        Arc::new(Slots {
            all: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            per_client: per_client.max(1),
            by_client: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `ip`, held until the slot is dropped.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let mut by_client = self.by_client.lock().unwrap_or_else(|p| p.into_inner());
        let held = by_client.get(&ip).copied().unwrap_or(0);
        if held >= self.per_client {
            return Err(Refused::Share);
        }
        let permit = self
            .all
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Full)?;
        by_client.insert(ip, held + 1);
        Ok(Slot {
            _permit: permit,
            slots: self.clone(),
            ip,
        })
    }
}

/// One connection's slot: given back when dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    slots: Arc<Slots>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut by_client = self
            .slots
            .by_client
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = by_client.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_client.remove(&self.ip);
            }
        }
    }
}

/// A connection holding one of the server's connection slots, closed with
/// an error if its HTTP/2 preface does not arrive within the handshake
/// timeout.
pub struct Limited<IO> {
    io: IO,
    _slot: Slot,
    /// Until the preface is in: its deadline and the bytes still missing.
    handshake: Option<(Pin<Box<Sleep>>, usize)>,
    metrics: Arc<Metrics>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for Limited<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if let Some((_, missing)) = &mut this.handshake {
                    let got = buf.filled().len() - before;
                    if got >= *missing {
                        this.handshake = None;
                    } else {
                        *missing -= got;
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if let Some((deadline, _)) = &mut this.handshake
                    && deadline.as_mut().poll(cx).is_ready()
                {
                    this.handshake = None;
                    Metrics::add(&this.metrics.handshake_timeouts_total, 1);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no HTTP/2 preface within the handshake timeout",
                    )));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Limited<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl Connected for Limited<TcpStream> {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

impl<IO> Drop for Limited<IO> {
    fn drop(&mut self) {
        self.metrics
            .tcp_connections_active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Accepts connections from `listener`, within `limits`: the excess is
/// closed at once and counted, whether the maximum is open or the
/// client's address holds its share. Accept errors (out of file
/// descriptors, for one) are logged and retried after a pause rather than
/// ending the server.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = Result<Limited<TcpStream>, io::Error>> {
    let slots = Slots::new(limits.max, limits.per_client);
    futures::stream::unfold(
        (listener, slots, metrics, 0u64),
        move |(listener, slots, metrics, mut refused_logged)| async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        Metrics::add(&metrics.accept_errors_total, 1);
                        warn!(error = %e, "cannot accept an xDS connection; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let slot = match slots.take(peer.ip()) {
                    Ok(slot) => slot,
                    Err(why) => {
                        Metrics::add(&metrics.connections_refused_total, 1);
                        // Once per power of two: a flood does not flood the log.
                        refused_logged += 1;
                        if refused_logged.is_power_of_two() {
                            warn_refused(peer, &limits, &why, refused_logged);
                        }
                        drop(stream);
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                Metrics::add(&metrics.tcp_connections_active, 1);
                let conn = Limited {
                    io: stream,
                    _slot: slot,
                    handshake: Some((Box::pin(tokio::time::sleep(limits.handshake)), PREFACE_LEN)),
                    metrics: metrics.clone(),
                };
                return Some((Ok(conn), (listener, slots, metrics, refused_logged)));
            }
        },
    )
}

fn warn_refused(peer: SocketAddr, limits: &ConnectionLimits, why: &Refused, refused: u64) {
    match why {
        Refused::Full => warn!(%peer, max = limits.max, refused,
            "xDS connection refused: the maximum of connections is open (--xds-max-connections)"),
        Refused::Share => warn!(%peer, per_client = limits.per_client, refused,
            "xDS connection refused: this client address holds its share of the connections (--xds-max-connections-per-client)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_takes_its_share_and_the_others_the_rest() {
        let slots = Slots::new(4, 2);
        let (a, b): (IpAddr, IpAddr) = (
            "127.0.0.2".parse().expect("ip"),
            "127.0.0.1".parse().expect("ip"),
        );
        let first = slots.take(a).expect("a 1");
        let _second = slots.take(a).expect("a 2");
        assert_eq!(slots.take(a).err(), Some(Refused::Share));
        let _b1 = slots.take(b).expect("b 1");
        let _b2 = slots.take(b).expect("b 2");
        assert_eq!(slots.take(b).err(), Some(Refused::Share));
        drop(first);
        let _again = slots.take(a).expect("a's slot came back");
        let c: IpAddr = "127.0.0.3".parse().expect("ip");
        assert_eq!(slots.take(c).err(), Some(Refused::Full));
    }
}
