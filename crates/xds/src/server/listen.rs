//! Binding the xDS ports and serving them: the plaintext listener, the TLS
//! one, and the HTTP/2 settings both serve with.

use std::net::SocketAddr;
use std::sync::Arc;

use super::XdsServer;
use super::limits::{self, ConnectionLimits};
use super::tls;

/// How many connections the kernel queues before the server accepts them.
/// A restarted control plane is reconnected to by every proxy at once; the
/// standard library's 128 overflowed under the load generator's 1,000-proxy
/// storm (the kernel then answers with SYN cookies, some of which fail, and
/// those proxies see a reset). The kernel caps it at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` for xDS with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as
/// `tokio::net::TcpListener::bind` sets it).
pub fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

impl XdsServer {
    /// Serves on `listener` until `shutdown` completes; then open streams
    /// are closed.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let incoming = limits::incoming(listener, self.limits(), self.shared.metrics.clone());
        self.http2()
            .add_service(self.service())
            .add_service(self.csds())
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }

    /// Serves TLS (and mTLS, as `tls` says) on `listener` until `shutdown`
    /// completes. The same server may serve a plaintext listener too.
    pub async fn serve_tls(
        self,
        listener: tokio::net::TcpListener,
        tls: Arc<tls::Tls>,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        self.serve_tls_with(listener, tls, |routes| routes, shutdown)
            .await
    }

    /// [`XdsServer::serve_tls`] with more gRPC services beside ADS, which
    /// `add` mounts (Sextant's CA, on the port Istio's agents ask it on).
    /// They see the connection's [`tls::TlsConnectInfo`] in their
    /// requests' extensions.
    pub async fn serve_tls_with(
        self,
        listener: tokio::net::TcpListener,
        tls: Arc<tls::Tls>,
        add: impl FnOnce(tonic::service::Routes) -> tonic::service::Routes,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let incoming = tls::incoming(listener, self.limits(), self.shared.metrics.clone(), tls);
        let routes = add(tonic::service::Routes::new(self.service()).add_service(self.csds()));
        self.http2()
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }

    /// What each listener's TCP connections may take.
    fn limits(&self) -> ConnectionLimits {
        let config = &self.shared.config;
        ConnectionLimits {
            max: config.max_connections,
            per_client: config.max_connections_per_client,
            handshake: config.handshake_timeout,
        }
    }

    /// The HTTP/2 settings every listener serves with: keepalive pings
    /// and the bound on streams per connection.
    fn http2(&self) -> tonic::transport::Server {
        let config = &self.shared.config;
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(config.keepalive_interval))
            .http2_keepalive_timeout(Some(config.keepalive_timeout))
            .max_concurrent_streams(config.max_streams_per_connection)
    }
}
