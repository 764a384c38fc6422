//! CSDS: `envoy.service.status.v3.ClientStatusDiscoveryService` on the xDS
//! ports (istiod does not serve it). For every connected client, its node
//! and, per resource it receives, the version, the resource itself (unless
//! `exclude_resource_contents`), and where it stands: Envoy's and gRPC's
//! tools and any CSDS client read Sextant's bookkeeping without a debug
//! endpoint.
//!
//! What is listed for a connection is what the newest snapshot gives it
//! through its lens (its scope and capture layout), for the names it
//! subscribes to (every name its lens shows, for a wildcard
//! subscription). Where the connection is CURRENT (see
//! [`super::status::ProxySync`]) that is exactly what it holds, SYNCED and
//! ACKED; otherwise each resource carries its type's state: a response on
//! its way is STALE, a rejected one ERROR and NACKED with the client's
//! error, a type not sent yet NOT_SENT. The version is the one the client
//! saw: the type's version for state-of-the-world clients (what Envoy's own
//! config dump shows), the resource's for delta clients.
//!
//! Authorized like xDS: with `--xds-auth` other than none, a caller proves
//! an identity (client certificate or bearer token) and sees the clients of
//! its own namespace only (the one each proved, else the one it claims).
//! Bounded: at most [`MAX_ENTRIES`] resources per answer (narrow with
//! `node_matchers` or `exclude_resource_contents`); node matchers on the id
//! (exact, prefix, suffix, contains), not on metadata.

use std::pin::Pin;

use envoy_types::pb::envoy::admin::v3::{ClientResourceStatus, UpdateFailureState};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::status::v3::client_config::GenericXdsConfig;
use envoy_types::pb::envoy::service::status::v3::client_status_discovery_service_server::{
    ClientStatusDiscoveryService, ClientStatusDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::status::v3::{
    ClientConfig, ClientStatusRequest, ClientStatusResponse, ConfigStatus,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{NodeMatcher, string_matcher};
use envoy_types::pb::google::protobuf::Any;
use futures::Stream;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use super::authorize::authorize;
use super::status::{Peer, ProxySync, TypeSync};
use super::tls::{TlsConnectInfo, spiffe_namespace};
use super::{XdsServer, lock};
use crate::identity::NodeIdentity;
use crate::server::codec::Wire;

/// Resources listed at most in one answer.
pub const MAX_ENTRIES: usize = 50_000;
/// Requests answered at most on one stream.
const MAX_STREAM_REQUESTS: usize = 10_000;

/// The CSDS service of an [`XdsServer`] (see the module docs).
#[derive(Clone)]
pub struct Csds {
    server: XdsServer,
}

impl XdsServer {
    /// The CSDS service to mount beside ADS.
    pub fn csds(&self) -> ClientStatusDiscoveryServiceServer<Csds> {
        ClientStatusDiscoveryServiceServer::new(Csds {
            server: self.clone(),
        })
    }
}

/// Who asks, from a request's transport and metadata.
fn peer_of<T>(req: &Request<T>) -> Peer {
    let tls = req.extensions().get::<TlsConnectInfo>();
    Peer {
        addr: req
            .remote_addr()
            .or_else(|| tls.and_then(|t| t.remote_addr)),
        identity: tls.and_then(|t| t.spiffe.clone()),
        token: req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .filter(|t| !t.is_empty() && t.len() <= super::grpc::MAX_TOKEN_BYTES)
            .map(sextant_core::Secret::from),
    }
}

/// Whether `id` passes the request's node matchers (none: every node).
fn matches(matchers: &[NodeMatcher], id: &str) -> Result<bool, Status> {
    if matchers.is_empty() {
        return Ok(true);
    }
    for m in matchers {
        if !m.node_metadatas.is_empty() {
            return Err(Status::unimplemented(
                "node_metadatas matchers are not served; match on node_id",
            ));
        }
        let Some(sm) = &m.node_id else {
            return Ok(true);
        };
        let fold = |s: &str| {
            if sm.ignore_case {
                s.to_lowercase()
            } else {
                s.to_owned()
            }
        };
        let id = fold(id);
        let hit = match &sm.match_pattern {
            Some(string_matcher::MatchPattern::Exact(x)) => id == fold(x),
            Some(string_matcher::MatchPattern::Prefix(x)) => id.starts_with(&fold(x)),
            Some(string_matcher::MatchPattern::Suffix(x)) => id.ends_with(&fold(x)),
            Some(string_matcher::MatchPattern::Contains(x)) => id.contains(&fold(x)),
            None => true,
            Some(_) => {
                return Err(Status::unimplemented(
                    "node_id matchers: exact, prefix, suffix or contains",
                ));
            }
        };
        if hit {
            return Ok(true);
        }
    }
    Ok(false)
}

impl Csds {
    /// The answer to one request.
    async fn answer(
        &self,
        peer: &Peer,
        req: &ClientStatusRequest,
    ) -> Result<ClientStatusResponse, Status> {
        let shared = &self.server.shared;
        // Where authentication is on, the caller's namespace bounds what it
        // sees.
        let viewer = authorize(&shared.config, peer, &NodeIdentity::default()).await?;
        let viewer_ns = viewer
            .as_deref()
            .and_then(spiffe_namespace)
            .map(str::to_owned);
        let snap = self.server.snapshot();
        let connections: Vec<_> = lock(&shared.connections).values().cloned().collect();
        let mut config = Vec::new();
        let mut entries = 0usize;
        for reg in connections {
            let status = reg.status(&snap);
            if status.node_id.is_empty() || !matches(&req.node_matchers, &status.node_id)? {
                continue;
            }
            if let Some(ns) = &viewer_ns
                && status.namespace().as_deref() != Some(ns.as_str())
            {
                continue;
            }
            let (lens, types) = reg.subscribed();
            // No lens shown yet is the plain one (a lens is shown only when
            // it differs from it).
            let lens = lens.unwrap_or_default();
            let mut generic = Vec::new();
            {
                for (kind, wildcard, names) in types {
                    let Some(ts) = status.types.iter().find(|t| t.kind == kind) else {
                        continue;
                    };
                    let names: Vec<std::sync::Arc<str>> = if wildcard {
                        lens.wildcard_names_and(&snap, kind, names.iter())
                    } else {
                        names.iter().cloned().collect()
                    };
                    let (config_status, client_status) = match (ts.state, status.sync) {
                        (TypeSync::Synced, ProxySync::Current) => {
                            (ConfigStatus::Synced, ClientResourceStatus::Acked)
                        }
                        (TypeSync::Synced, ProxySync::Behind) => {
                            (ConfigStatus::Stale, ClientResourceStatus::Acked)
                        }
                        (TypeSync::Sent | TypeSync::Stale, _) => {
                            (ConfigStatus::Stale, ClientResourceStatus::Unknown)
                        }
                        (TypeSync::Nacked, _) => {
                            (ConfigStatus::Error, ClientResourceStatus::Nacked)
                        }
                        (TypeSync::NotSent, _) => {
                            (ConfigStatus::NotSent, ClientResourceStatus::Requested)
                        }
                    };
                    let error_state = (ts.state == TypeSync::Nacked)
                        .then_some(ts.last_nack.as_ref())
                        .flatten()
                        .map(|n| UpdateFailureState {
                            details: n.error.clone(),
                            version_info: n.version.clone(),
                            ..Default::default()
                        });
                    for name in names {
                        let resource = lens.get(&snap, status.client, kind, &name);
                        if resource.is_none() && wildcard {
                            continue;
                        }
                        entries += 1;
                        if entries > MAX_ENTRIES {
                            return Err(Status::resource_exhausted(format!(
                                "more than {MAX_ENTRIES} resources: narrow the request with node_matchers"
                            )));
                        }
                        let mut g = GenericXdsConfig {
                            type_url: kind.type_url().to_owned(),
                            name: name.to_string(),
                            ..Default::default()
                        };
                        match resource {
                            None => {
                                g.client_status = ClientResourceStatus::DoesNotExist as i32;
                                g.config_status = ConfigStatus::Synced as i32;
                            }
                            Some(r) => {
                                g.version_info = match status.protocol {
                                    Wire::Sotw if ts.state == TypeSync::Synced => {
                                        ts.acked_version.clone()
                                    }
                                    Wire::Sotw => ts.sent_version.clone(),
                                    Wire::Delta => r.version.to_string(),
                                };
                                // A router's certificates: name and version,
                                // never the private key.
                                if !req.exclude_resource_contents
                                    && kind != crate::resource::ResourceType::Secret
                                {
                                    g.xds_config = Any::decode(r.any.clone()).ok();
                                }
                                g.config_status = config_status as i32;
                                g.client_status = client_status as i32;
                                g.error_state = error_state.clone();
                            }
                        }
                        generic.push(g);
                    }
                }
            }
            config.push(ClientConfig {
                node: Some(Node {
                    id: status.node_id.clone(),
                    cluster: status.node_cluster.clone(),
                    user_agent_name: status.user_agent.clone(),
                    ..Default::default()
                }),
                generic_xds_configs: generic,
                ..Default::default()
            });
        }
        Ok(ClientStatusResponse { config })
    }
}

type AnswerStream = Pin<Box<dyn Stream<Item = Result<ClientStatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ClientStatusDiscoveryService for Csds {
    type StreamClientStatusStream = AnswerStream;

    async fn fetch_client_status(
        &self,
        request: Request<ClientStatusRequest>,
    ) -> Result<Response<ClientStatusResponse>, Status> {
        let peer = peer_of(&request);
        self.answer(&peer, request.get_ref())
            .await
            .map(Response::new)
    }

    async fn stream_client_status(
        &self,
        request: Request<Streaming<ClientStatusRequest>>,
    ) -> Result<Response<Self::StreamClientStatusStream>, Status> {
        let peer = peer_of(&request);
        let csds = self.clone();
        let mut requests = request.into_inner();
        let stream = async_stream(move |tx| async move {
            let mut n = 0;
            while let Ok(Some(req)) = requests.message().await {
                n += 1;
                if n > MAX_STREAM_REQUESTS {
                    let _ = tx
                        .send(Err(Status::resource_exhausted(
                            "too many requests on one stream",
                        )))
                        .await;
                    return;
                }
                let answer = csds.answer(&peer, &req).await;
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }
}

/// A stream fed by a task: `body` sends on the channel it is given.
fn async_stream<F, Fut>(body: F) -> AnswerStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<ClientStatusResponse, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(body(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
