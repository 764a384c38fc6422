//! The gRPC glue: the two ADS methods mounted as a tower service, their
//! requests decoded with tonic and their responses written as HTTP/2 body
//! frames from shared bytes ([`grpc_body`]), whatever serves the streams
//! ([`AdsHandler`]: Sextant's server, or the load generator's floor).

use std::convert::Infallible;
use std::task::{Context, Poll};

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use futures::Stream;
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::{Status, Streaming};

use super::XdsServer;
use super::codec::{self, Outbound, Wire};
use super::config::DEFAULT_MAX_REQUEST_BYTES;
use super::conn::ConnState;
use super::request::SotwRequest;
use super::status::Peer;
use super::tls;

/// The gRPC service name.
pub const SERVICE_NAME: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";

/// The longest bearer token read (a Kubernetes service-account token is
/// about 1 KB); a longer one counts as none.
pub const MAX_TOKEN_BYTES: usize = 16 << 10;

/// A stream of responses for one ADS stream; [`grpc_body`] writes it.
pub type ResponseStream = std::pin::Pin<Box<dyn Stream<Item = Result<Outbound, Status>> + Send>>;

/// What serves ADS streams once they are decoded: Sextant's server, or the
/// load generator's floor. Each method gets the peer and the stream's
/// requests, and returns its responses.
pub trait AdsHandler: Clone + Send + Sync + 'static {
    /// The largest request accepted, in bytes.
    fn max_request_bytes(&self) -> usize {
        DEFAULT_MAX_REQUEST_BYTES
    }

    /// `StreamAggregatedResources` (state of the world).
    fn sotw(&self, peer: Peer, requests: Streaming<SotwRequest>) -> ResponseStream;
    /// `DeltaAggregatedResources`.
    fn delta(&self, peer: Peer, requests: Streaming<DeltaDiscoveryRequest>) -> ResponseStream;
}

impl AdsHandler for XdsServer {
    fn max_request_bytes(&self) -> usize {
        self.shared.config.max_request_bytes
    }

    fn sotw(&self, peer: Peer, requests: Streaming<SotwRequest>) -> ResponseStream {
        super::connection::start(&self.shared, Wire::Sotw, peer, requests, ConnState::on_sotw)
    }

    fn delta(&self, peer: Peer, requests: Streaming<DeltaDiscoveryRequest>) -> ResponseStream {
        super::connection::start(
            &self.shared,
            Wire::Delta,
            peer,
            requests,
            ConnState::on_delta,
        )
    }
}

/// The tower service tonic mounts (see [`XdsServer::service`]): routes the
/// two ADS methods to a handler, decoding requests and writing responses
/// the same way whatever the handler.
#[derive(Clone)]
pub struct AdsService<H = XdsServer> {
    handler: H,
}

impl<H: AdsHandler> AdsService<H> {
    /// Serves ADS with `handler`.
    pub fn new(handler: H) -> Self {
        AdsService { handler }
    }
}

impl<H> tonic::server::NamedService for AdsService<H> {
    const NAME: &'static str = SERVICE_NAME;
}

/// The gRPC response body: each response's frames (shared resource bytes
/// for large resources), then the trailers. Written without tonic's encoder,
/// whose per-stream buffer would keep the largest response ever sent.
pub fn grpc_body(responses: ResponseStream) -> tonic::body::Body {
    use http_body::Frame;
    struct St {
        responses: ResponseStream,
        pending: std::collections::VecDeque<Frame<bytes::Bytes>>,
        finished: bool,
    }
    fn trailers(status: &Status) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(Status::GRPC_STATUS, (status.code() as i32).into());
        if !status.message().is_empty() {
            // gRPC percent-encodes the message: bytes outside 0x20-0x7e, and '%'.
            let mut encoded = String::new();
            for b in status.message().bytes() {
                if (0x20..=0x7e).contains(&b) && b != b'%' {
                    encoded.push(char::from(b));
                } else {
                    encoded.push_str(&format!("%{b:02X}"));
                }
            }
            if let Ok(v) = http::HeaderValue::from_str(&encoded) {
                h.insert(Status::GRPC_MESSAGE, v);
            }
        }
        h
    }
    let state = St {
        responses,
        pending: Default::default(),
        finished: false,
    };
    let frames = futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(frame) = st.pending.pop_front() {
                return Some((Ok::<_, Infallible>(frame), st));
            }
            if st.finished {
                return None;
            }
            match futures::StreamExt::next(&mut st.responses).await {
                Some(Ok(out)) => st.pending.extend(out.frames().into_iter().map(Frame::data)),
                Some(Err(status)) => {
                    st.pending.push_back(Frame::trailers(trailers(&status)));
                    st.finished = true;
                }
                None => {
                    st.pending
                        .push_back(Frame::trailers(trailers(&Status::ok(""))));
                    st.finished = true;
                }
            }
        }
    });
    tonic::body::Body::new(http_body_util::StreamBody::new(frames))
}

/// Serves one ADS stream over HTTP/2: decodes its requests (`Req`, either
/// ADS request type) with tonic, hands them and the peer's address to
/// `start`, and writes the responses it returns with [`grpc_body`].
fn ads_response<B, Req>(
    req: http::Request<B>,
    max_request_bytes: usize,
    start: impl FnOnce(Peer, Streaming<Req>) -> ResponseStream,
) -> http::Response<tonic::body::Body>
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
    Req: codec::DecodeRequest,
{
    let (parts, body) = req.into_parts();
    let tls = parts.extensions.get::<tls::TlsConnectInfo>();
    let peer = Peer {
        addr: parts
            .extensions
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|info| info.remote_addr())
            .or_else(|| tls.and_then(|t| t.remote_addr)),
        identity: tls.and_then(|t| t.spiffe.clone()),
        token: parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_BYTES)
            .map(sextant_core::Secret::from),
    };
    let decoder = tonic::codec::Codec::decoder(&mut codec::AdsCodec::<Req>::default());
    let requests = Streaming::new_request(decoder, body, None, Some(max_request_bytes));
    let mut response = http::Response::new(grpc_body(start(peer, requests)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        tonic::metadata::GRPC_CONTENT_TYPE,
    );
    response
}

impl<H, B> tower_service::Service<http::Request<B>> for AdsService<H>
where
    H: AdsHandler,
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
        let handler = &self.handler;
        match req.uri().path() {
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources" => {
                let response = ads_response(req, handler.max_request_bytes(), |peer, requests| {
                    handler.sotw(peer, requests)
                });
                Box::pin(async move { Ok(response) })
            }
            "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources" => {
                let response = ads_response(req, handler.max_request_bytes(), |peer, requests| {
                    handler.delta(peer, requests)
                });
                Box::pin(async move { Ok(response) })
            }
            _ => Box::pin(async move {
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
            }),
        }
    }
}
