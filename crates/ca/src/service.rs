//! `CreateCertificate` over gRPC, mounted on Sextant's TLS xDS port (Istio's
//! 15012) beside ADS.
//!
//! The caller proves who it is as it would to be served xDS: a client
//! certificate with a SPIFFE id (verified by the port's TLS), or a bearer
//! token in the `authorization` metadata that the server's validator
//! accepts (Kubernetes TokenReview, or the token file). The certificate
//! names that identity and no other. Every issue is counted; it is logged
//! once per identity and hour (a fleet renewing is not a log flood).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::{Request, Response, Status};

use crate::authority::{Authority, Identity, IssueError};
use crate::proto::{
    CREATE_CERTIFICATE, IstioCertificateRequest, IstioCertificateResponse, SERVICE,
};

/// The largest request read.
pub const MAX_REQUEST_BYTES: usize = 64 << 10;

/// How long an issue to one identity stays unlogged after it was logged.
pub const LOG_EVERY: Duration = Duration::from_secs(3600);

/// Identities remembered as logged (bounded: when full, it starts over).
const LOGGED_REMEMBERED: usize = 10_000;

/// What a caller presents.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    /// The SPIFFE id of its verified client certificate.
    pub certificate: Option<String>,
    /// Its bearer token.
    pub token: Option<String>,
}

/// The future an authentication returns.
pub type Authenticating<'a> = Pin<Box<dyn Future<Output = Result<Identity, String>> + Send + 'a>>;

/// Who a caller is, from its credentials (the `sextant` crate answers with
/// the xDS server's own validators).
pub trait Authenticate: Send + Sync + 'static {
    /// The identity `credentials` prove, or why they prove none.
    fn authenticate<'a>(&'a self, credentials: &'a Credentials) -> Authenticating<'a>;
}

/// Counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct CaMetrics {
    /// Certificates issued.
    pub issued_total: AtomicU64,
    /// Requests without credentials the CA accepts.
    pub unauthenticated_total: AtomicU64,
    /// Requests with a CSR the CA refuses.
    pub bad_csr_total: AtomicU64,
    /// Requests that failed in signing.
    pub failed_total: AtomicU64,
    /// Reloads of the CA's files that did not load.
    pub reload_failures_total: AtomicU64,
}

impl CaMetrics {
    /// A counter's value.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

struct Inner {
    authority: Arc<Authority>,
    authenticate: Arc<dyn Authenticate>,
    metrics: Arc<CaMetrics>,
    logged: Mutex<HashMap<Identity, Instant>>,
}

/// The certificate service, for tonic's router.
#[derive(Clone)]
pub struct CaService {
    inner: Arc<Inner>,
}

impl CaService {
    /// Issues from `authority` to callers `authenticate` accepts.
    pub fn new(
        authority: Arc<Authority>,
        authenticate: Arc<dyn Authenticate>,
        metrics: Arc<CaMetrics>,
    ) -> CaService {
        CaService {
            inner: Arc::new(Inner {
                authority,
                authenticate,
                metrics,
                logged: Mutex::new(HashMap::new()),
            }),
        }
    }
}

impl tonic::server::NamedService for CaService {
    const NAME: &'static str = SERVICE;
}

/// The connection's client certificate identity, as the TLS listener put
/// it in the request's extensions.
fn certificate_identity<T>(req: &Request<T>) -> Option<String> {
    req.extensions()
        .get::<sextant_xds::server::tls::TlsConnectInfo>()
        .and_then(|t| t.spiffe.clone())
}

fn bearer<T>(req: &Request<T>) -> Option<String> {
    req.metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty() && t.len() <= sextant_xds::server::MAX_TOKEN_BYTES)
        .map(str::to_owned)
}

impl Inner {
    async fn create(
        &self,
        req: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let credentials = Credentials {
            certificate: certificate_identity(&req),
            token: bearer(&req),
        };
        let identity = match self.authenticate.authenticate(&credentials).await {
            Ok(id) => id,
            Err(why) => {
                self.metrics
                    .unauthenticated_total
                    .fetch_add(1, Ordering::Relaxed);
                tracing::debug!(reason = %why, "certificate refused: unauthenticated");
                return Err(Status::unauthenticated(why));
            }
        };
        let request = req.into_inner();
        let requested = u64::try_from(request.validity_duration)
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        let authority = self.authority.clone();
        let id = identity.clone();
        // Signing is CPU work (RSA CAs especially): off the serving threads.
        let issued =
            tokio::task::spawn_blocking(move || authority.issue(&request.csr, &id, requested))
                .await
                .map_err(|e| Status::internal(format!("the signing task failed: {e}")))?;
        match issued {
            Ok(issued) => {
                self.metrics.issued_total.fetch_add(1, Ordering::Relaxed);
                let first = {
                    let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
                    if logged.len() >= LOGGED_REMEMBERED {
                        logged.clear();
                    }
                    let now = Instant::now();
                    match logged.get(&identity) {
                        Some(at) if now.duration_since(*at) < LOG_EVERY => false,
                        _ => {
                            logged.insert(identity.clone(), now);
                            true
                        }
                    }
                };
                let lifetime = issued
                    .not_after
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default();
                if first {
                    tracing::info!(
                        identity = %identity.spiffe(self.authority.trust_domain()),
                        lifetime_s = lifetime.as_secs(),
                        "workload certificate issued (logged once an hour per identity)"
                    );
                }
                Ok(Response::new(IstioCertificateResponse {
                    cert_chain: issued.chain,
                }))
            }
            Err(IssueError::Csr(e)) => {
                self.metrics.bad_csr_total.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(identity = ?identity, error = %e, "certificate refused: bad CSR");
                Err(Status::invalid_argument(e.to_string()))
            }
            Err(e @ IssueError::Sign(_)) => {
                self.metrics.failed_total.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "certificate signing failed");
                Err(Status::internal(e.to_string()))
            }
        }
    }
}

struct Create(Arc<Inner>);

impl tonic::server::UnaryService<IstioCertificateRequest> for Create {
    type Response = IstioCertificateResponse;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<IstioCertificateRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.create(request).await })
    }
}

impl<B> tower_service::Service<http::Request<B>> for CaService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() == CREATE_CERTIFICATE {
            let inner = self.inner.clone();
            return Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                    .apply_max_message_size_config(Some(MAX_REQUEST_BYTES), None);
                Ok(grpc.unary(Create(inner), req).await)
            });
        }
        Box::pin(async move {
            let mut response = http::Response::new(tonic::body::Body::default());
            let headers = response.headers_mut();
            headers.insert(
                Status::GRPC_STATUS,
                (tonic::Code::Unimplemented as i32).into(),
            );
            headers.insert(
                http::header::CONTENT_TYPE,
                tonic::metadata::GRPC_CONTENT_TYPE,
            );
            Ok(response)
        })
    }
}
