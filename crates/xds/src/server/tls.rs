//! TLS and mTLS on the xDS port, with rustls (ring).
//!
//! - The server's certificate and key, and the CA that client certificates
//!   must chain to, are PEM files read at start and checked for changes every
//!   [`TlsFiles::check_every`]: cert-manager and Kubernetes secret volumes
//!   rotate them by swapping a symlink, so the files' contents are compared,
//!   not their inodes. New connections get the new certificate; open streams
//!   go on with the one they started with. A change that does not load (a
//!   key without its certificate, half-written files) is logged and counted
//!   (`sextant_xds_tls_reload_failures_total`), and the last good
//!   configuration keeps serving.
//! - Client certificates: not asked for, optional or required
//!   ([`ClientAuth`]). A verified certificate's SPIFFE URI
//!   (`spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT`) is the connection's
//!   identity ([`super::Peer::identity`]).
//! - Each handshake must finish within the server's handshake timeout; it
//!   runs on its own task, so a slow or silent client delays nobody else.
//!   Failed handshakes are counted (`sextant_xds_tls_handshake_failures_total`).

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use rustls::ServerConfig as RustlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tracing::{info, warn};

use super::Metrics;
use super::limits::{self, Limited};

/// Whether clients present certificates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// Not asked for: TLS protects the channel, proxies are not identified.
    #[default]
    None,
    /// Asked for and verified when sent; clients without one are served.
    Optional,
    /// Required: a client without a certificate the CA signed is refused
    /// in the handshake.
    Require,
}

/// The files of the TLS port.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The CA that client certificates must chain to (PEM); needed unless
    /// `client_auth` is `None`.
    pub client_ca: Option<PathBuf>,
    /// Whether clients present certificates.
    pub client_auth: ClientAuth,
    /// How often the files are checked for changes. Default 5 s.
    pub check_every: Duration,
}

impl TlsFiles {
    /// The server's certificate and key; no client certificates.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsFiles {
        TlsFiles {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
            client_auth: ClientAuth::None,
            check_every: Duration::from_secs(5),
        }
    }
}

/// A serving certificate made in memory rather than read from files (by
/// Sextant's own CA), renewed by its maker: each call returns what should
/// serve now, and a change is picked up as a file change would be.
pub trait ServingCert: Send + Sync + 'static {
    /// The certificate chain and key (PEM), and the CA client certificates
    /// must chain to (PEM) with whether clients present one.
    fn current(&self) -> Result<ServingPem, String>;
}

/// What a [`ServingCert`] serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServingPem {
    /// The certificate chain, leaf first.
    pub chain: Vec<u8>,
    /// Its key.
    pub key: Vec<u8>,
    /// The CA client certificates must chain to.
    pub client_ca: Option<Vec<u8>>,
    /// Whether clients present certificates.
    pub client_auth: ClientAuth,
}

/// Where the TLS port's certificate comes from.
#[derive(Clone)]
pub enum TlsSource {
    /// PEM files, re-read when they change.
    Files(TlsFiles),
    /// Made in memory, renewed by its maker.
    Issued(Arc<dyn ServingCert>),
}

impl std::fmt::Debug for TlsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsSource::Files(files) => f.debug_tuple("Files").field(files).finish(),
            TlsSource::Issued(_) => f.write_str("Issued(..)"),
        }
    }
}

impl From<TlsFiles> for TlsSource {
    fn from(files: TlsFiles) -> TlsSource {
        TlsSource::Files(files)
    }
}

impl TlsSource {
    /// How often it is checked for a change.
    fn check_every(&self) -> Duration {
        match self {
            TlsSource::Files(f) => f.check_every,
            TlsSource::Issued(_) => Duration::from_secs(5),
        }
    }

    /// What it says now, to tell a change.
    fn contents(&self) -> Contents {
        match self {
            TlsSource::Files(files) => read_all(files),
            TlsSource::Issued(source) => match source.current() {
                Ok(pem) => Contents(vec![
                    Some(pem.chain),
                    Some(pem.key),
                    pem.client_ca,
                    Some(format!("{:?}", pem.client_auth).into_bytes()),
                ]),
                Err(_) => Contents(Vec::new()),
            },
        }
    }

    /// The rustls configuration it makes, or what is wrong.
    fn load(&self) -> Result<Arc<RustlsConfig>, String> {
        match self {
            TlsSource::Files(files) => load(files),
            TlsSource::Issued(source) => load_issued(&source.current()?),
        }
    }

    fn describe(&self) -> String {
        match self {
            TlsSource::Files(files) => files.cert.display().to_string(),
            TlsSource::Issued(_) => "the certificate Sextant's CA made".to_owned(),
        }
    }
}

/// The contents read, to tell a change.
#[derive(PartialEq, Eq)]
struct Contents(Vec<Option<Vec<u8>>>);

fn read_all(files: &TlsFiles) -> Contents {
    let mut paths = vec![&files.cert, &files.key];
    paths.extend(files.client_ca.as_ref());
    // Bounded: certificate files are small; a huge file is an error below.
    Contents(
        paths
            .into_iter()
            .map(|p| std::fs::read(p).ok().filter(|b| b.len() <= MAX_PEM_BYTES))
            .collect(),
    )
}

/// The largest PEM file read.
pub const MAX_PEM_BYTES: usize = 1 << 20;

fn read_file(path: &std::path::Path, what: &str) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    if bytes.len() > MAX_PEM_BYTES {
        return Err(format!(
            "the {what} {} is over {MAX_PEM_BYTES} bytes",
            path.display()
        ));
    }
    Ok(bytes)
}

fn certs(path: &std::path::Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_file(path, what)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the {what} {} is not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "the {what} {} holds no certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// Builds the rustls configuration from the files, or says what is wrong.
pub fn load(files: &TlsFiles) -> Result<Arc<RustlsConfig>, String> {
    let chain = certs(&files.cert, "certificate")?;
    let key_bytes = read_file(&files.key, "private key")?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes)
        .map_err(|e| format!("the private key {} is not usable: {e}", files.key.display()))?;
    let client_ca = match (files.client_auth, &files.client_ca) {
        (ClientAuth::None, _) => None,
        (_, None) => {
            return Err("client certificates are asked for (--client-auth) but no CA is given (--client-ca)".into());
        }
        (_, Some(ca)) => Some((certs(ca, "client CA")?, ca.display().to_string())),
    };
    build(
        chain,
        key,
        files.client_auth,
        client_ca,
        &format!(
            "the certificate {} and key {}",
            files.cert.display(),
            files.key.display()
        ),
    )
}

/// Builds the rustls configuration from a certificate made in memory.
fn load_issued(pem: &ServingPem) -> Result<Arc<RustlsConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem.chain)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the serving certificate is not PEM: {e}"))?;
    if chain.is_empty() {
        return Err("the serving certificate holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&pem.key)
        .map_err(|e| format!("the serving key is not usable: {e}"))?;
    let client_ca = match (&pem.client_ca, pem.client_auth) {
        (_, ClientAuth::None) => None,
        (None, _) => return Err("client certificates are asked for but no CA is given".into()),
        (Some(ca), _) => Some((
            CertificateDer::pem_slice_iter(ca)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("the client CA is not PEM: {e}"))?,
            "the mesh's root".to_owned(),
        )),
    };
    build(
        chain,
        key,
        pem.client_auth,
        client_ca,
        "the serving certificate and key",
    )
}

fn build(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_auth: ClientAuth,
    client_ca: Option<(Vec<CertificateDer<'static>>, String)>,
    pair: &str,
) -> Result<Arc<RustlsConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = RustlsConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match (client_auth, client_ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err("client certificates are asked for (--client-auth) but no CA is given (--client-ca)".into());
        }
        (auth, Some((certs, ca))) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("the client CA {ca}: {e}"))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("the client CA {ca}: {e}"))?,
            )
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("{pair} do not go together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS configuration in force, reloaded when its source changes.
pub struct Tls {
    source: TlsSource,
    current: RwLock<(Contents, Arc<RustlsConfig>)>,
    metrics: Arc<Metrics>,
}

impl Tls {
    /// Loads the source (files, or a certificate made in memory); fails
    /// with a message naming what is at fault.
    pub fn new(source: impl Into<TlsSource>, metrics: Arc<Metrics>) -> Result<Arc<Tls>, String> {
        let source = source.into();
        let contents = source.contents();
        let config = source.load()?;
        Ok(Arc::new(Tls {
            source,
            current: RwLock::new((contents, config)),
            metrics,
        }))
    }

    fn config(&self) -> Arc<RustlsConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// Reloads if the source changed; true if a new configuration is in
    /// force.
    pub fn reload_if_changed(&self) -> bool {
        let contents = self.source.contents();
        if self.current.read().unwrap_or_else(|p| p.into_inner()).0 == contents {
            return false;
        }
        match self.source.load() {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = (contents, config);
                Metrics::add(&self.metrics.tls_reloads_total, 1);
                info!(cert = %self.source.describe(), "xDS TLS certificate changed: new connections get the new one");
                true
            }
            Err(e) => {
                // Keep the last good configuration; try again next time (the
                // same broken contents are not reported twice).
                self.current.write().unwrap_or_else(|p| p.into_inner()).0 = contents;
                Metrics::add(&self.metrics.tls_reload_failures_total, 1);
                warn!(error = %e, "xDS TLS files changed but do not load; the previous certificate keeps serving");
                false
            }
        }
    }

    /// Checks the files every `check_every` until the server goes away.
    fn watch(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let every = self.source.check_every().max(Duration::from_millis(50));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(tls) = weak.upgrade() else {
                    return;
                };
                let _ = tokio::task::spawn_blocking(move || tls.reload_if_changed()).await;
            }
        });
    }
}

/// What tonic learns of a TLS connection: where it comes from and who its
/// certificate says it is.
#[derive(Clone, Debug)]
pub struct TlsConnectInfo {
    /// The client's address.
    pub remote_addr: Option<std::net::SocketAddr>,
    /// The SPIFFE id of its verified certificate, if it sent one.
    pub spiffe: Option<String>,
}

/// One accepted TLS connection.
pub struct TlsConn {
    io: tokio_rustls::server::TlsStream<Limited<TcpStream>>,
    info: TlsConnectInfo,
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
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

impl Connected for TlsConn {
    type ConnectInfo = TlsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}

/// Accepts TLS connections: the TCP limits of [`limits::incoming`], then
/// each handshake on its own task within `handshake`.
pub fn incoming(
    listener: TcpListener,
    limits: limits::ConnectionLimits,
    metrics: Arc<Metrics>,
    tls: Arc<Tls>,
) -> impl Stream<Item = Result<TlsConn, io::Error>> {
    tls.watch();
    let (tx, rx) = mpsc::channel(64);
    let handshake = limits.handshake;
    let raw = limits::incoming(listener, limits, metrics.clone());
    tokio::spawn(async move {
        let mut raw = std::pin::pin!(raw);
        loop {
            let next = tokio::select! {
                next = raw.next() => next,
                () = tx.closed() => return,
            };
            let Some(Ok(conn)) = next else {
                continue;
            };
            let remote_addr = conn.connect_info().remote_addr();
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
            let (tx, metrics) = (tx.clone(), metrics.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(handshake, acceptor.accept(conn)).await {
                    Ok(Ok(io)) => {
                        let spiffe = io
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(|c| spiffe_id(c.as_ref()));
                        let info = TlsConnectInfo {
                            remote_addr,
                            spiffe,
                        };
                        let _ = tx.send(Ok(TlsConn { io, info })).await;
                    }
                    Ok(Err(e)) => {
                        Metrics::add(&metrics.tls_handshake_failures_total, 1);
                        tracing::debug!(peer = ?remote_addr, error = %e, "xDS TLS handshake failed");
                    }
                    Err(_) => {
                        Metrics::add(&metrics.tls_handshake_failures_total, 1);
                        Metrics::add(&metrics.handshake_timeouts_total, 1);
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// One DER element: its tag, its contents, and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |l, b| (l << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The subjectAltName extension's OID, 2.5.29.17, as DER contents.
const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11];

/// The first `spiffe://` URI SAN of a certificate (DER), if any. Reads only
/// what it needs; anything malformed is `None`.
pub fn spiffe_id(cert: &[u8]) -> Option<String> {
    let (_, certificate, _) = der(cert)?;
    let (_, tbs, _) = der(certificate)?;
    let mut rest = tbs;
    // [3] EXPLICIT extensions, after the fixed fields.
    let extensions = loop {
        let (tag, contents, next) = der(rest)?;
        if tag == 0xa3 {
            break contents;
        }
        rest = next;
    };
    let (_, mut list, _) = der(extensions)?;
    while !list.is_empty() {
        let (_, extension, next) = der(list)?;
        list = next;
        let (_, oid, mut fields) = der(extension)?;
        if oid != SAN_OID {
            continue;
        }
        // critical BOOLEAN (optional), then extnValue OCTET STRING.
        let (mut tag, mut value, after) = der(fields)?;
        if tag == 0x01 {
            fields = after;
            (tag, value, _) = der(fields)?;
        }
        if tag != 0x04 {
            return None;
        }
        let (_, mut names, _) = der(value)?;
        while !names.is_empty() {
            let (tag, name, next) = der(names)?;
            names = next;
            // uniformResourceIdentifier [6] IMPLICIT IA5String.
            if tag == 0x86
                && let Ok(uri) = std::str::from_utf8(name)
                && uri.starts_with("spiffe://")
            {
                return Some(uri.to_owned());
            }
        }
        return None;
    }
    None
}

/// The namespace and service account of a SPIFFE id of exactly Istio's
/// form (`spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT`, both non-empty,
/// nothing after): what a certificate may be issued for.
pub fn spiffe_account(id: &str) -> Option<(&str, &str)> {
    let path = id.strip_prefix("spiffe://")?.split_once('/')?.1;
    let mut parts = path.split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("ns"), Some(ns), Some("sa"), Some(sa), None) if !ns.is_empty() && !sa.is_empty() => {
            Some((ns, sa))
        }
        _ => None,
    }
}

/// The namespace of a SPIFFE id of Istio's form
/// (`spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT`).
pub fn spiffe_namespace(id: &str) -> Option<&str> {
    let path = id.strip_prefix("spiffe://")?.split_once('/')?.1;
    let mut parts = path.split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("ns"), Some(ns), Some("sa")) if !ns.is_empty() => Some(ns),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
