//! What a TCP connection may cost before and while it speaks xDS: a bounded
//! number of them, each with a deadline for its HTTP/2 preface.
//!
//! Streams per connection are bounded by HTTP/2 itself
//! (`SETTINGS_MAX_CONCURRENT_STREAMS`, see [`super::ServerConfig`]), and a
//! connection that stops answering HTTP/2 pings is closed by the keepalive.
//! What HTTP/2 cannot see is the connection that never starts: this module
//! closes it after the handshake timeout, and refuses connections beyond
//! the maximum at once, so that silent sockets cannot use up the process's
//! file descriptors and lock out proxies, the admin port and the registries.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
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

/// A connection holding one of the server's connection slots, closed with
/// an error if its HTTP/2 preface does not arrive within the handshake
/// timeout.
pub struct Limited<IO> {
    io: IO,
    _slot: OwnedSemaphorePermit,
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

/// Accepts connections from `listener`: at most `max` open at once (the
/// excess is closed at once and counted), each with `handshake` to send its
/// preface. Accept errors (out of file descriptors, for one) are logged and
/// retried after a pause rather than ending the server.
pub fn incoming(
    listener: TcpListener,
    max: usize,
    handshake: Duration,
    metrics: Arc<Metrics>,
) -> impl Stream<Item = Result<Limited<TcpStream>, io::Error>> {
    let slots = Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS)));
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
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    Metrics::add(&metrics.connections_refused_total, 1);
                    // Once per power of two: a flood does not flood the log.
                    refused_logged += 1;
                    if refused_logged.is_power_of_two() {
                        warn_refused(peer, max, refused_logged);
                    }
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                Metrics::add(&metrics.tcp_connections_active, 1);
                let conn = Limited {
                    io: stream,
                    _slot: slot,
                    handshake: Some((Box::pin(tokio::time::sleep(handshake)), PREFACE_LEN)),
                    metrics: metrics.clone(),
                };
                return Some((Ok(conn), (listener, slots, metrics, refused_logged)));
            }
        },
    )
}

fn warn_refused(peer: SocketAddr, max: usize, refused: u64) {
    warn!(%peer, max, refused, "xDS connection refused: the maximum of connections is open (--xds-max-connections)");
}
