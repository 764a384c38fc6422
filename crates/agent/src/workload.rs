//! The workload's certificate, as Istio's agent keeps it: a key made here
//! (it never leaves the pod), a CSR sent to Sextant's CA
//! (`IstioCertificateService/CreateCertificate` on the TLS xDS port) with
//! the pod's token, renewal at half the lifetime with jitter, retries with
//! backoff while the CA cannot be reached, and the certificate in hand
//! kept until it expires: a control plane that is down for a while costs
//! no traffic until the certificates it issued run out.
//!
//! What is held goes to Envoy over SDS ([`crate::sds`]) and, for proxyless
//! gRPC, into files a `file_watcher` certificate provider reads
//! ([`write_files`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sextant_ca::proto::{CREATE_CERTIFICATE, IstioCertificateRequest, IstioCertificateResponse};
use tokio::sync::watch;
use tracing::{info, warn};

/// The files written for proxyless gRPC (Istio's names for mounted
/// certificates).
pub const CERT_CHAIN_FILE: &str = "cert-chain.pem";
/// The key's file.
pub const KEY_FILE: &str = "key.pem";
/// The root's file.
pub const ROOT_CERT_FILE: &str = "root-cert.pem";

/// The largest answer read from the CA.
const MAX_RESPONSE_BYTES: usize = 256 << 10;
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait between two failed requests.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A certificate, its key and the root, as held now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Material {
    /// The certificate chain, PEM, the leaf first (the root left out).
    pub chain: String,
    /// The private key, PKCS#8 PEM.
    pub key: String,
    /// The mesh's root, PEM.
    pub root: String,
    /// When the leaf's validity started.
    pub not_before: SystemTime,
    /// When it ends.
    pub not_after: SystemTime,
    /// When the agent received it.
    pub received: SystemTime,
    /// 1 for the first certificate, one more at each renewal.
    pub version: u64,
}

impl Material {
    /// When to renew: half the lifetime, moved by up to a tenth of the
    /// lifetime either way (`jitter` in -1..=1) so that pods started
    /// together do not renew together. The lifetime counts from receipt,
    /// not from `not_before`: CAs backdate certificates for clock skew
    /// (Sextant's by a minute), which would otherwise pull the renewal of a
    /// short certificate to its start.
    pub fn renew_at(&self, jitter: f64) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.received)
            .unwrap_or_default();
        let half = life / 2;
        let shift = life.mul_f64(0.1 * jitter.clamp(-1.0, 1.0).abs());
        if jitter < 0.0 {
            self.received + half - shift
        } else {
            self.received + half + shift
        }
    }
}

/// Where and how certificates are asked for.
#[derive(Clone, Debug)]
pub struct CaClient {
    /// The CA's address, HOST:PORT (Sextant's TLS xDS port).
    pub addr: String,
    /// The root (PEM file) the CA's port certificate chains to.
    pub ca_cert: PathBuf,
    /// The name the CA's certificate must carry [default: the host].
    pub server_name: Option<String>,
    /// The bearer token file sent as `authorization` (read at each
    /// request: the kubelet rotates it).
    pub token_file: Option<PathBuf>,
    /// The lifetime asked for (the CA may give less).
    pub ttl: Duration,
    /// The identity written into the CSR (the CA decides the name from the
    /// token, whatever this says).
    pub spiffe: String,
}

impl CaClient {
    /// One certificate for a new key.
    pub async fn request(&self) -> Result<(String, String, String), String> {
        let key = rcgen::KeyPair::generate().map_err(|e| format!("a key: {e}"))?;
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| format!("CSR: {e}"))?;
        if let Ok(uri) = self.spiffe.as_str().try_into() {
            params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
        }
        let csr = params
            .serialize_request(&key)
            .and_then(|c| c.pem())
            .map_err(|e| format!("CSR: {e}"))?;
        let request = IstioCertificateRequest {
            csr,
            validity_duration: i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX),
            metadata: None,
        };
        let chain = tokio::time::timeout(REQUEST_TIMEOUT, self.call(request))
            .await
            .map_err(|_| {
                format!(
                    "the CA at {} did not answer within {REQUEST_TIMEOUT:?}",
                    self.addr
                )
            })??;
        let (leaf, root) = match chain.as_slice() {
            [] | [_] => {
                return Err(format!(
                    "the CA answered a chain of {} certificates; a leaf and a root were expected",
                    chain.len()
                ));
            }
            [leaf @ .., root] => (leaf.concat(), root.clone()),
        };
        Ok((leaf, key.serialize_pem(), root))
    }

    async fn call(&self, request: IstioCertificateRequest) -> Result<Vec<String>, String> {
        let channel = channel(&self.addr, Some(&self.ca_cert), self.server_name.as_deref())
            .await
            .map_err(|e| format!("the CA: {e}"))?;
        let mut request = tonic::Request::new(request);
        bearer(&mut request, self.token_file.as_deref())?;
        let mut grpc =
            tonic::client::Grpc::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES);
        grpc.ready()
            .await
            .map_err(|e| format!("the CA at {}: {e}", self.addr))?;
        let codec: tonic_prost::ProstCodec<IstioCertificateRequest, IstioCertificateResponse> =
            tonic_prost::ProstCodec::default();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static(CREATE_CERTIFICATE);
        let response = grpc
            .unary(request, path, codec)
            .await
            .map_err(|s| format!("the CA refused: {:?}: {}", s.code(), s.message()))?;
        Ok(response.into_inner().cert_chain)
    }
}

/// A gRPC channel to Sextant at `addr` (HOST:PORT): over TLS verified
/// against the root in `ca` (for `server_name`, else the host), in
/// plaintext without one.
pub(crate) async fn channel(
    addr: &str,
    ca: Option<&Path>,
    server_name: Option<&str>,
) -> Result<tonic::transport::Channel, String> {
    let Some(ca) = ca else {
        return tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| format!("{addr}: {e}"))?
            .connect_timeout(REQUEST_TIMEOUT)
            .connect()
            .await
            .map_err(|e| format!("cannot reach {addr}: {}", chain_of(&e)));
    };
    let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem))
        .domain_name(server_name.unwrap_or(host));
    tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| format!("{addr}: {e}"))?
        .tls_config(tls)
        .map_err(|e| format!("TLS: {e}"))?
        .connect_timeout(REQUEST_TIMEOUT)
        .connect()
        .await
        .map_err(|e| format!("cannot reach {addr}: {}", chain_of(&e)))
}

/// Sends the token in `token_file`, if any, as the request's bearer token
/// (read at each request: a projected token is rotated in place).
pub(crate) fn bearer<T>(
    request: &mut tonic::Request<T>,
    token_file: Option<&Path>,
) -> Result<(), String> {
    let Some(path) = token_file else {
        return Ok(());
    };
    let token = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the token {}: {e}", path.display()))?;
    let value = format!("Bearer {}", token.trim())
        .parse()
        .map_err(|_| format!("the token in {} is not a header value", path.display()))?;
    request.metadata_mut().insert("authorization", value);
    Ok(())
}

/// An error and its causes on one line.
fn chain_of(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// What keeping the certificate did, for the status port's `/metrics`.
#[derive(Debug, Default)]
pub struct CertCounts {
    /// Certificates received.
    pub received: std::sync::atomic::AtomicU64,
    /// Requests to the CA that failed.
    pub failures: std::sync::atomic::AtomicU64,
}

/// Keeps a certificate: asks for one, publishes it on `held` (and into
/// `files`, when given), renews it at half its life, retries with backoff
/// while the CA fails (each failure counted in `counts`); runs until
/// aborted.
pub async fn keep(
    client: CaClient,
    held: watch::Sender<Option<Arc<Material>>>,
    files: Option<PathBuf>,
    counts: Arc<CertCounts>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut version = 0u64;
    let mut backoff = Duration::from_secs(1);
    loop {
        match client.request().await {
            Ok((chain, key, root)) => {
                let (not_before, not_after) = match sextant_ca::authority::validity_pem(&chain) {
                    Ok(v) => v,
                    Err(e) => {
                        warn!(error = %e, "the CA's certificate cannot be read; asking again");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                };
                version += 1;
                let material = Material {
                    chain,
                    key,
                    root,
                    not_before,
                    not_after,
                    received: SystemTime::now(),
                    version,
                };
                if let Some(dir) = &files
                    && let Err(e) = write_files(dir, &material)
                {
                    warn!(error = %e, "cannot write the certificate files for gRPC");
                }
                let renew_at = material.renew_at(jitter());
                let expires_in = not_after
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                info!(
                    version,
                    expires_in_s = expires_in.as_secs(),
                    renew_in_s = renew_at
                        .duration_since(SystemTime::now())
                        .unwrap_or_default()
                        .as_secs(),
                    "workload certificate received"
                );
                held.send_replace(Some(Arc::new(material)));
                counts.received.fetch_add(1, Relaxed);
                backoff = Duration::from_secs(1);
                let wait = renew_at
                    .duration_since(SystemTime::now())
                    .unwrap_or_default();
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                counts.failures.fetch_add(1, Relaxed);
                let current = held.borrow().clone();
                let delay = match &current {
                    Some(m) => {
                        let left = m
                            .not_after
                            .duration_since(SystemTime::now())
                            .unwrap_or_default();
                        let delay = retry_delay(backoff, left);
                        warn!(error = %e, expires_in_s = left.as_secs(), retry_in_ms = delay.as_millis() as u64, "cannot renew the workload certificate; the current one keeps serving");
                        delay
                    }
                    None => {
                        warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot get a workload certificate yet");
                        backoff
                    }
                };
                tokio::time::sleep(delay).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// How long to wait before asking again, with `left` of the certificate's
/// life: the backoff, but never more than a quarter of what is left (at
/// least a second), so that a CA back before the expiry is asked in time.
/// A plain exponential backoff overshot it: a minute-long certificate
/// expired while the agent waited 32 s for its next try, 2 s after the CA
/// was back.
pub fn retry_delay(backoff: Duration, left: Duration) -> Duration {
    backoff.min((left / 4).max(Duration::from_secs(1)))
}

/// A number in -1..=1 that differs between pods and renewals.
fn jitter() -> f64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let mixed =
        u64::from(nanos ^ std::process::id().rotate_left(16)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (mixed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

/// Writes the chain, key and root into `dir` (each through a temporary
/// file and a rename, so a reader never sees half of one; the key at mode
/// 0600).
pub fn write_files(dir: &Path, m: &Material) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (name, contents, private) in [
        (KEY_FILE, &m.key, true),
        (CERT_CHAIN_FILE, &m.chain, false),
        (ROOT_CERT_FILE, &m.root, false),
    ] {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        if private {
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        }
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            let mut f = options.open(&tmp)?;
            f.write_all(contents.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_at_half_life_within_a_tenth() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let m = Material {
            chain: String::new(),
            key: String::new(),
            root: String::new(),
            not_before: start - Duration::from_secs(60),
            not_after: start + Duration::from_secs(1000),
            received: start,
            version: 1,
        };
        assert_eq!(m.renew_at(0.0), start + Duration::from_secs(500));
        assert_eq!(m.renew_at(1.0), start + Duration::from_secs(600));
        assert_eq!(m.renew_at(-1.0), start + Duration::from_secs(400));
        assert_eq!(m.renew_at(7.0), start + Duration::from_secs(600));
        let s = Duration::from_secs;
        assert_eq!(retry_delay(s(2), s(3600)), s(2));
        assert_eq!(retry_delay(s(32), s(20)), s(5));
        assert_eq!(retry_delay(s(32), s(2)), s(1));
        assert_eq!(retry_delay(s(32), Duration::ZERO), s(1));
        for _ in 0..100 {
            let j = jitter();
            assert!((-1.0..=1.0).contains(&j), "{j}");
        }
    }
}
