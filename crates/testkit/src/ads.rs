//! A small ADS client for tests: speaks SotW or delta with explicit control
//! over every field, decodes responses with envoy-types (not with the
//! server's own code), and never acknowledges anything by itself.

use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

/// Type URLs.
pub mod types {
    /// Cluster.
    pub const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    /// ClusterLoadAssignment.
    pub const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    /// Listener.
    pub const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    /// RouteConfiguration.
    pub const RDS: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
}

/// How long `recv` waits before failing the test: only a guard against a
/// hang, never a measurement.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

fn node(id: &str) -> Node {
    Node {
        id: id.to_owned(),
        cluster: "test".to_owned(),
        ..Default::default()
    }
}

/// A node `id` with string metadata (`NAMESPACE`, `INSTANCE_IPS`,
/// `AUTO_REGISTER_GROUP`...), for [`SotwClient::with_node`].
pub fn node_with(id: &str, metadata: &[(&str, &str)]) -> Node {
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
    Node {
        metadata: Some(Struct {
            fields: metadata
                .iter()
                .map(|(k, v)| {
                    (
                        (*k).to_owned(),
                        Value {
                            kind: Some(Kind::StringValue((*v).to_owned())),
                        },
                    )
                })
                .collect(),
        }),
        ..node(id)
    }
}

/// A client on one new connection to `addr`, retried for a while if the
/// server is not listening yet.
pub async fn connect(
    addr: SocketAddr,
) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
    let mut last = None;
    for _ in 0..50 {
        match AggregatedDiscoveryServiceClient::connect(format!("http://{addr}")).await {
            // Large meshes (and the memory tests' made-up names) get
            // responses over tonic's 4 MiB default.
            Ok(c) => return c.max_decoding_message_size(256 << 20),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot connect to ADS at {addr}: {last:?}");
}

async fn recv<T>(rx: &mut Streaming<T>) -> T {
    match tokio::time::timeout(RECV_TIMEOUT, rx.message()).await {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => panic!("server closed the stream"),
        Ok(Err(status)) => panic!("stream error: {status}"),
        Err(_) => panic!("no response within {RECV_TIMEOUT:?}"),
    }
}

async fn try_recv<T>(rx: &mut Streaming<T>, wait: Duration) -> Option<T> {
    match tokio::time::timeout(wait, rx.message()).await {
        Ok(Ok(Some(r))) => Some(r),
        Ok(Ok(None)) | Ok(Err(_)) => panic!("stream ended"),
        Err(_) => None,
    }
}

/// A state-of-the-world stream.
pub struct SotwClient {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
    node: Node,
    sent_node: bool,
}

impl SotwClient {
    /// Sends `node` (metadata, locality...) instead of a bare node id.
    /// Call before the first request.
    pub fn with_node(mut self, node: Node) -> SotwClient {
        self.node = node;
        self
    }

    /// Opens a stream to `addr` as node `node_id`.
    pub async fn connect(addr: SocketAddr, node_id: &str) -> SotwClient {
        SotwClient::open(connect(addr).await, node_id).await
    }

    /// Opens another stream on `client`'s connection (streams on one
    /// connection share it, as HTTP/2 multiplexes them).
    pub async fn open(
        client: AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
        node_id: &str,
    ) -> SotwClient {
        SotwClient::open_with_token(client, node_id, None).await
    }

    /// Opens a stream to `addr` as node `node_id`, sending `token` as a
    /// bearer token in the `authorization` metadata.
    pub async fn connect_with_token(addr: SocketAddr, node_id: &str, token: &str) -> SotwClient {
        SotwClient::open_with_token(connect(addr).await, node_id, Some(token)).await
    }

    async fn open_with_token(
        mut client: AggregatedDiscoveryServiceClient<tonic::transport::Channel>,
        node_id: &str,
        token: Option<&str>,
    ) -> SotwClient {
        let (tx, rx) = mpsc::channel(16);
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some(t) = token {
            request.metadata_mut().insert(
                "authorization",
                format!("Bearer {t}")
                    .parse()
                    .unwrap_or_else(|e| panic!("token {t:?} is not a header value: {e}")),
            );
        }
        let rx = client
            .stream_aggregated_resources(request)
            .await
            .unwrap_or_else(|e| panic!("stream_aggregated_resources: {e}"))
            .into_inner();
        SotwClient {
            tx,
            rx,
            node: node(node_id),
            sent_node: false,
        }
    }

    /// Sends a request; the node goes with the first one only, like Envoy.
    pub async fn request(
        &mut self,
        type_url: &str,
        names: &[&str],
        version: &str,
        nonce: &str,
        error: Option<&str>,
    ) {
        let req = DiscoveryRequest {
            version_info: version.to_owned(),
            node: (!self.sent_node).then(|| self.node.clone()),
            resource_names: names.iter().map(|s| (*s).to_owned()).collect(),
            type_url: type_url.to_owned(),
            response_nonce: nonce.to_owned(),
            error_detail: error.map(|m| RpcStatus {
                code: 3,
                message: m.to_owned(),
                details: vec![],
            }),
            ..Default::default()
        };
        self.sent_node = true;
        self.tx
            .send(req)
            .await
            .unwrap_or_else(|_| panic!("ADS stream closed"));
    }

    /// Subscribes (first request of a type).
    pub async fn subscribe(&mut self, type_url: &str, names: &[&str]) {
        self.request(type_url, names, "", "", None).await;
    }

    /// Acknowledges `r`, restating the subscription `names`.
    pub async fn ack(&mut self, r: &DiscoveryResponse, names: &[&str]) {
        self.request(
            &r.type_url.clone(),
            names,
            &r.version_info.clone(),
            &r.nonce.clone(),
            None,
        )
        .await;
    }

    /// Rejects `r` with `message`, keeping `version` (the last accepted).
    pub async fn nack(
        &mut self,
        r: &DiscoveryResponse,
        names: &[&str],
        version: &str,
        message: &str,
    ) {
        self.request(
            &r.type_url.clone(),
            names,
            version,
            &r.nonce.clone(),
            Some(message),
        )
        .await;
    }

    /// The next response; fails the test after [`RECV_TIMEOUT`].
    pub async fn recv(&mut self) -> DiscoveryResponse {
        recv(&mut self.rx).await
    }

    /// The next response if one arrives within `wait`.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<DiscoveryResponse> {
        try_recv(&mut self.rx, wait).await
    }

    /// The stream's raw result, for tests that expect it to fail.
    pub async fn recv_result(&mut self) -> Result<Option<DiscoveryResponse>, tonic::Status> {
        self.rx.message().await
    }
}

/// An incremental (delta) stream.
pub struct DeltaClient {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
    node: Node,
    sent_node: bool,
}

impl DeltaClient {
    /// Sends `node` (metadata, locality...) instead of a bare node id.
    /// Call before the first request.
    pub fn with_node(mut self, node: Node) -> DeltaClient {
        self.node = node;
        self
    }

    /// Opens a stream to `addr` as node `node_id`.
    pub async fn connect(addr: SocketAddr, node_id: &str) -> DeltaClient {
        let mut client = connect(addr).await;
        let (tx, rx) = mpsc::channel(16);
        let rx = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap_or_else(|e| panic!("delta_aggregated_resources: {e}"))
            .into_inner();
        DeltaClient {
            tx,
            rx,
            node: node(node_id),
            sent_node: false,
        }
    }

    /// Sends a request as given (node added to the first one).
    pub async fn send(&mut self, mut req: DeltaDiscoveryRequest) {
        if !self.sent_node {
            req.node = Some(self.node.clone());
            self.sent_node = true;
        }
        self.tx
            .send(req)
            .await
            .unwrap_or_else(|_| panic!("ADS stream closed"));
    }

    /// Subscribes to `names` of a type.
    pub async fn subscribe(&mut self, type_url: &str, names: &[&str]) {
        self.send(DeltaDiscoveryRequest {
            type_url: type_url.to_owned(),
            resource_names_subscribe: names.iter().map(|s| (*s).to_owned()).collect(),
            ..Default::default()
        })
        .await;
    }

    /// Acknowledges `r`.
    pub async fn ack(&mut self, r: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await;
    }

    /// Rejects `r`.
    pub async fn nack(&mut self, r: &DeltaDiscoveryResponse, message: &str) {
        self.send(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: message.to_owned(),
                details: vec![],
            }),
            ..Default::default()
        })
        .await;
    }

    /// The next response; fails the test after [`RECV_TIMEOUT`].
    pub async fn recv(&mut self) -> DeltaDiscoveryResponse {
        recv(&mut self.rx).await
    }

    /// The next response if one arrives within `wait`.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<DeltaDiscoveryResponse> {
        try_recv(&mut self.rx, wait).await
    }
}
