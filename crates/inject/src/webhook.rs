//! `sextant webhook`: the mutating admission webhook over HTTPS (rustls,
//! ring), Istio's port 15017. `POST /inject` answers AdmissionReviews
//! ([`crate::review`]); `GET /healthz/ready` answers 200.
//!
//! The certificate and key are read again when their files change (checked
//! every few seconds, by content: secret volumes swap symlinks); a pair that
//! does not load leaves the last good one in force. Connections are
//! bounded ([`MAX_CONNECTIONS`]), each TLS handshake runs on its own task
//! within [`HANDSHAKE_TIMEOUT`], and a review is read up to
//! [`crate::review::MAX_REVIEW_BYTES`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tracing::{debug, info, warn};

use crate::render::Outcome;
use crate::review::{MAX_REVIEW_BYTES, review};
use crate::template::Template;

/// Connections open at once.
pub const MAX_CONNECTIONS: usize = 256;
/// A TLS handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the certificate files are checked for changes.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The webhook's serving certificate and key (PEM files).
#[derive(Clone, Debug)]
pub struct CertFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

fn load(files: &CertFiles) -> Result<(Vec<u8>, Arc<ServerConfig>), String> {
    let cert = std::fs::read(&files.cert).map_err(|e| format!("{}: {e}", files.cert.display()))?;
    let key = std::fs::read(&files.key).map_err(|e| format!("{}: {e}", files.key.display()))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", files.cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", files.cert.display()));
    }
    let private =
        PrivateKeyDer::from_pem_slice(&key).map_err(|e| format!("{}: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| format!("the certificate and key do not go together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut contents = cert;
    contents.extend(key);
    Ok((contents, Arc::new(config)))
}

/// The TLS configuration in force, reloaded when its files change.
struct Reloading {
    files: CertFiles,
    current: RwLock<(Vec<u8>, Arc<ServerConfig>)>,
}

impl Reloading {
    fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    fn check(&self) {
        let (Ok(cert), Ok(key)) = (
            std::fs::read(&self.files.cert),
            std::fs::read(&self.files.key),
        ) else {
            return;
        };
        let mut contents = cert;
        contents.extend(key);
        if self.current.read().unwrap_or_else(|p| p.into_inner()).0 == contents {
            return;
        }
        match load(&self.files) {
            Ok(loaded) => {
                info!(cert = %self.files.cert.display(), "webhook certificate reloaded");
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded;
            }
            Err(e) => {
                warn!(error = %e, "the new webhook certificate does not load; keeping the last good one")
            }
        }
    }
}

/// Accepted, handshaken TLS connections, for axum.
struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop is gone: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

#[derive(Clone)]
struct Hook {
    template: Arc<Template>,
    native: bool,
}

/// Serves the webhook on `listener` with `files`, injecting with
/// `template` (native sidecars as `native` says), until the task is
/// dropped. Fails at once if the certificate does not load.
pub async fn serve(
    listener: TcpListener,
    files: CertFiles,
    template: Template,
    native: bool,
) -> Result<(), String> {
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let tls = Arc::new(Reloading {
        current: RwLock::new(load(&files)?),
        files,
    });
    let watcher = {
        let tls = tls.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(CHECK_EVERY).await;
                tls.check();
            }
        })
    };
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let accept = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, "cannot accept a webhook connection; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                debug!(%peer, "webhook connection refused: the maximum is open");
                continue;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _slot = slot;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send((stream, peer)).await;
                    }
                    Ok(Err(e)) => debug!(%peer, error = %e, "webhook TLS handshake failed"),
                    Err(_) => debug!(%peer, "webhook TLS handshake timed out"),
                }
            });
        }
    });
    let hook = Hook {
        template: Arc::new(template),
        native,
    };
    let app = Router::new()
        .route("/inject", post(inject))
        .route("/healthz/ready", get(|| async { "ready\n" }))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(hook);
    info!(addr = %local, native, "sextant webhook serving");
    let served = axum::serve(TlsListener { rx, local }, app).await;
    accept.abort();
    watcher.abort();
    served.map_err(|e| e.to_string())
}

async fn inject(State(hook): State<Hook>, body: Bytes) -> (StatusCode, String) {
    let request: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not an AdmissionReview: {e}\n"),
            );
        }
    };
    match review(&request, &hook.template, hook.native) {
        Ok(decision) => {
            match &decision.outcome {
                Some(Outcome::Injected) => info!(object = %decision.object, "injected"),
                Some(Outcome::Skipped(why)) => {
                    info!(object = %decision.object, %why, "not injected")
                }
                None => {
                    debug!(object = %decision.object, "not a pod being created; allowed as it is")
                }
            }
            (StatusCode::OK, decision.response.to_string())
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

/// Whether the API server `config` reaches has native sidecars (1.29 or
/// newer, from `/version`).
pub async fn api_server_has_native_sidecars(client: &kube::Client) -> Result<bool, String> {
    let v = client
        .apiserver_version()
        .await
        .map_err(|e| format!("cannot read the API server's version: {e}"))?;
    let minor: u32 = v
        .minor
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .map_err(|_| {
            format!(
                "the API server's minor version {:?} is not a number",
                v.minor
            )
        })?;
    let major: u32 = v.major.parse().unwrap_or(1);
    Ok(major > 1 || minor >= 29)
}
