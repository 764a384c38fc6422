//! SDS on a unix socket: Envoy's view of the workload certificate.
//!
//! The names are Istio's: `default` is the workload's certificate and key,
//! `ROOTCA` the mesh's root to validate peers with. Envoy asks for them
//! over `SecretDiscoveryService/StreamSecrets` (state of the world); every
//! stream is answered as soon as a certificate is held, and again at each
//! renewal, so a rotated certificate reaches Envoy without a restart and
//! without a dropped connection. The socket is the pod's own (mode 0600):
//! the key never crosses the network.

use std::collections::BTreeSet;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate, secret,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use crate::workload::Material;

/// The workload certificate's resource name (Istio's).
pub const DEFAULT: &str = "default";
/// The root's resource name (Istio's).
pub const ROOTCA: &str = "ROOTCA";
/// Secrets' type URL.
pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// The most resource names one request may list.
const MAX_NAMES: usize = 64;

/// The SDS service over what [`crate::workload::keep`] holds.
#[derive(Clone)]
pub struct Sds {
    held: watch::Receiver<Option<Arc<Material>>>,
}

impl Sds {
    /// Serves what `held` holds.
    pub fn new(held: watch::Receiver<Option<Arc<Material>>>) -> Sds {
        Sds { held }
    }
}

/// The secrets `names` asks for that are known, encoded.
fn secrets(names: &BTreeSet<String>, m: &Material) -> Vec<Any> {
    let inline = |s: &str| {
        Some(DataSource {
            specifier: Some(Specifier::InlineBytes(s.as_bytes().to_vec())),
            ..Default::default()
        })
    };
    names
        .iter()
        .filter_map(|name| {
            let kind = match name.as_str() {
                DEFAULT => secret::Type::TlsCertificate(TlsCertificate {
                    certificate_chain: inline(&m.chain),
                    private_key: inline(&m.key),
                    ..Default::default()
                }),
                ROOTCA => secret::Type::ValidationContext(CertificateValidationContext {
                    trusted_ca: inline(&m.root),
                    ..Default::default()
                }),
                _ => return None,
            };
            let secret = Secret {
                name: name.clone(),
                r#type: Some(kind),
            };
            Some(Any {
                type_url: SECRET_TYPE.to_owned(),
                value: prost::Message::encode_to_vec(&secret),
            })
        })
        .collect()
}

fn response(names: &BTreeSet<String>, m: &Material, nonce: u64) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: m.version.to_string(),
        resources: secrets(names, m),
        type_url: SECRET_TYPE.to_owned(),
        nonce: nonce.to_string(),
        ..Default::default()
    }
}

/// The names of a request, or why they are refused.
fn names_of(request: &DiscoveryRequest) -> Result<BTreeSet<String>, Status> {
    if request.resource_names.len() > MAX_NAMES {
        return Err(Status::invalid_argument(format!(
            "{} resource names; at most {MAX_NAMES}",
            request.resource_names.len()
        )));
    }
    if !request.type_url.is_empty() && request.type_url != SECRET_TYPE {
        return Err(Status::invalid_argument(format!(
            "type {:?}: this server has secrets only",
            request.type_url
        )));
    }
    let names: BTreeSet<String> = request.resource_names.iter().cloned().collect();
    for unknown in names.iter().filter(|n| *n != DEFAULT && *n != ROOTCA) {
        warn!(name = %unknown, "Envoy asked for a secret the agent does not have (it has default and ROOTCA)");
    }
    Ok(names)
}

/// One stream: answer a change of names at once (when a certificate is
/// held) and every new certificate; ACKs need no answer.
async fn stream(
    mut requests: Streaming<DiscoveryRequest>,
    mut held: watch::Receiver<Option<Arc<Material>>>,
    out: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    let mut names: Option<BTreeSet<String>> = None;
    let mut sent: Option<(BTreeSet<String>, u64)> = None;
    let mut nonce = 0u64;
    loop {
        // What is due now.
        let current = held.borrow_and_update().clone();
        if let (Some(want), Some(m)) = (&names, &current) {
            let due = sent
                .as_ref()
                .is_none_or(|(n, v)| n != want || *v != m.version);
            if due {
                nonce += 1;
                if out.send(Ok(response(want, m, nonce))).await.is_err() {
                    return;
                }
                sent = Some((want.clone(), m.version));
            }
        }
        tokio::select! {
            request = requests.message() => match request {
                Ok(Some(request)) => {
                    if let Some(e) = &request.error_detail {
                        warn!(version = %request.version_info, error = %e.message, "Envoy refused a secret (NACK)");
                    }
                    match names_of(&request) {
                        Ok(n) => names = Some(n),
                        Err(status) => {
                            let _ = out.send(Err(status)).await;
                            return;
                        }
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    debug!(error = %e, "SDS stream ended");
                    return;
                }
            },
            changed = held.changed() => if changed.is_err() {
                return;
            },
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl SecretDiscoveryService for Sds {
    type DeltaSecretsStream = BoxStream<DeltaDiscoveryResponse>;
    type StreamSecretsStream = BoxStream<DiscoveryResponse>;

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented(
            "the agent serves secrets in state-of-the-world form (sds_config api_type GRPC)",
        ))
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(stream(request.into_inner(), self.held.clone(), tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let names = names_of(request.get_ref())?;
        let current = self.held.borrow().clone();
        match current {
            Some(m) => Ok(Response::new(response(&names, &m, 0))),
            None => Err(Status::unavailable("no workload certificate yet")),
        }
    }
}

/// Binds `path` (replacing a socket left by an earlier run; mode 0600) and
/// serves SDS there until the task is aborted.
pub fn serve(path: &Path, sds: Sds) -> Result<tokio::task::JoinHandle<()>, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", path.display())),
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    Ok(tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(SecretDiscoveryServiceServer::new(sds))
            .serve_with_incoming(incoming)
            .await
        {
            warn!(error = %e, "the SDS server stopped");
        }
    }))
}
