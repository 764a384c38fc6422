//! A small etcd v3 client: the calls this adapter makes (range, put,
//! watch, lease grant, keep-alive and revoke, authenticate), over tonic's
//! generic gRPC client with the few protobuf messages written out here.
//!
//! Why not etcd-client: its build script compiles etcd's `.proto` files
//! and needs protoc on the machine of every crate that depends on it, which
//! an embedder building `sextant` with the `etcd` feature should not need.
//! The messages below carry etcd's field numbers (etcdserverpb, mvccpb);
//! fields this adapter does not use are left out (protobuf skips unknown
//! fields).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status, Streaming};
use tonic_prost::ProstCodec;

/// The header every response carries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    /// The store's revision when the request was served.
    #[prost(int64, tag = "3")]
    pub revision: i64,
}

/// A key and its value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    /// The key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The revision of its last change.
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    /// The value.
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
    /// The lease it is attached to (0: none).
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

impl KeyValue {
    /// The key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
    /// The value.
    pub fn value(&self) -> &[u8] {
        &self.value
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    range_end: Vec<u8>,
    #[prost(int64, tag = "3")]
    limit: i64,
    #[prost(int64, tag = "4")]
    revision: i64,
    #[prost(bool, tag = "9")]
    count_only: bool,
}

/// What a range read returns.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    kvs: Vec<KeyValue>,
    #[prost(bool, tag = "3")]
    more: bool,
    #[prost(int64, tag = "4")]
    count: i64,
}

impl RangeResponse {
    /// The response header.
    pub fn header(&self) -> Option<&ResponseHeader> {
        self.header.as_ref()
    }
    /// The keys read.
    pub fn kvs(&self) -> &[KeyValue] {
        &self.kvs
    }
    /// How many keys matched.
    pub fn count(&self) -> i64 {
        self.count
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
    #[prost(int64, tag = "3")]
    lease: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PutResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WatchRequest {
    #[prost(message, optional, tag = "1")]
    create_request: Option<WatchCreateRequest>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct WatchCreateRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    range_end: Vec<u8>,
    #[prost(int64, tag = "3")]
    start_revision: i64,
}

/// One message of a watch.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
    #[prost(bool, tag = "4")]
    canceled: bool,
    #[prost(int64, tag = "5")]
    compact_revision: i64,
    #[prost(string, tag = "6")]
    cancel_reason: String,
    #[prost(message, repeated, tag = "11")]
    events: Vec<Event>,
}

impl WatchResponse {
    /// The response header.
    pub fn header(&self) -> Option<&ResponseHeader> {
        self.header.as_ref()
    }
    /// The watch was cancelled (see `compact_revision`, `cancel_reason`).
    pub fn canceled(&self) -> bool {
        self.canceled
    }
    /// When cancelled because the start revision was compacted: the
    /// oldest revision still available.
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }
    /// Why it was cancelled.
    pub fn cancel_reason(&self) -> &str {
        &self.cancel_reason
    }
    /// The changes it carries.
    pub fn events(&self) -> &[Event] {
        &self.events
    }
}

/// A change to one key.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(enumeration = "EventType", tag = "1")]
    r#type: i32,
    #[prost(message, optional, tag = "2")]
    kv: Option<KeyValue>,
}

/// A put or a delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum EventType {
    /// The key was written.
    Put = 0,
    /// The key was deleted.
    Delete = 1,
}

impl Event {
    /// What happened.
    pub fn event_type(&self) -> EventType {
        EventType::try_from(self.r#type).unwrap_or(EventType::Put)
    }
    /// The key (and, for a put, its new value).
    pub fn kv(&self) -> Option<&KeyValue> {
        self.kv.as_ref()
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct LeaseGrantRequest {
    #[prost(int64, tag = "1")]
    ttl: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LeaseGrantResponse {
    #[prost(int64, tag = "2")]
    id: i64,
    #[prost(string, tag = "4")]
    error: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LeaseRevokeRequest {
    #[prost(int64, tag = "1")]
    id: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct LeaseRevokeResponse {}

#[derive(Clone, PartialEq, prost::Message)]
struct LeaseKeepAliveRequest {
    #[prost(int64, tag = "1")]
    id: i64,
}

/// The answer to one keep-alive.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseKeepAliveResponse {
    #[prost(int64, tag = "2")]
    id: i64,
    #[prost(int64, tag = "3")]
    ttl: i64,
}

impl LeaseKeepAliveResponse {
    /// The lease's remaining time to live, in seconds (0 or less: gone).
    pub fn ttl(&self) -> i64 {
        self.ttl
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct AuthenticateRequest {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    password: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct AuthenticateResponse {
    #[prost(string, tag = "2")]
    token: String,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No endpoint could be reached.
    #[error("{0}")]
    Transport(#[from] tonic::transport::Error),
    /// etcd answered with an error.
    #[error("{}: {}", .0.code(), .0.message())]
    Status(#[from] Status),
    /// The settings cannot work (a bad URL, an unreadable certificate).
    #[error("{0}")]
    Config(String),
}

/// How to connect.
#[derive(Clone, Debug, Default)]
pub struct ConnectOptions {
    /// The connect timeout.
    pub connect_timeout: Option<Duration>,
    /// HTTP/2 keep-alive: ping every `.0`, give up after `.1` without an answer.
    pub keep_alive: Option<(Duration, Duration)>,
    /// User name and password (etcd authentication).
    pub credentials: Option<(String, sextant_core::Secret)>,
    /// TLS: CA certificate (PEM), and a client certificate and key (PEM).
    pub tls: Option<TlsOptions>,
}

/// TLS settings, PEM bytes.
#[derive(Clone, Default)]
pub struct TlsOptions {
    /// The CA that signed etcd's certificate.
    pub ca: Option<Vec<u8>>,
    /// A client certificate and its key, for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for TlsOptions {
    /// Sizes only: the key is a secret, the rest is not worth the bytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca_bytes", &self.ca.as_ref().map(Vec::len))
            .field(
                "client_identity",
                &self.identity.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// The end of the range of every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Empty, or all 0xff: every key from the prefix on.
    vec![0]
}

/// Keys asked for per page of a full read.
pub const PAGE_KEYS: i64 = 1000;

/// The largest etcd response read (tonic's default is 4 MiB); pages keep
/// responses well under it.
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// A connection to etcd. Clones share it.
#[derive(Clone, Debug)]
pub struct Client {
    grpc: tonic::client::Grpc<Channel>,
    token: Option<MetadataValue<Ascii>>,
}

impl Client {
    /// Connects to the first of `endpoints` that answers, and authenticates
    /// when credentials are given.
    pub async fn connect(
        endpoints: &[String],
        options: ConnectOptions,
    ) -> Result<Client, ClientError> {
        let mut last = ClientError::Config("no etcd endpoints".into());
        for url in endpoints {
            match Self::connect_one(url, &options).await {
                Ok(channel) => {
                    let mut client = Client {
                        grpc: tonic::client::Grpc::new(channel)
                            .max_decoding_message_size(MAX_RESPONSE_BYTES),
                        token: None,
                    };
                    if let Some((name, password)) = &options.credentials {
                        let r: AuthenticateResponse = client
                            .unary(
                                "/etcdserverpb.Auth/Authenticate",
                                AuthenticateRequest {
                                    name: name.clone(),
                                    password: password.expose().to_owned(),
                                },
                            )
                            .await?;
                        let token = MetadataValue::try_from(r.token.as_str()).map_err(|_| {
                            ClientError::Config("etcd sent an unusable auth token".into())
                        })?;
                        client.token = Some(token);
                    }
                    return Ok(client);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    async fn connect_one(url: &str, options: &ConnectOptions) -> Result<Channel, ClientError> {
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| ClientError::Config(format!("etcd endpoint {url:?}: {e}")))?;
        if let Some(t) = options.connect_timeout {
            endpoint = endpoint.connect_timeout(t);
        }
        if let Some((every, timeout)) = options.keep_alive {
            endpoint = endpoint
                .http2_keep_alive_interval(every)
                .keep_alive_timeout(timeout)
                .keep_alive_while_idle(true);
        }
        if let Some(tls) = &options.tls {
            let mut config = ClientTlsConfig::new();
            if let Some(ca) = &tls.ca {
                config = config.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint.tls_config(config)?;
        }
        Ok(endpoint.connect().await?)
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        if let Some(token) = &self.token {
            request.metadata_mut().insert("token", token.clone());
        }
        request
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("etcd connection not ready: {e}")))
    }

    async fn unary<Q, R>(&mut self, path: &'static str, message: Q) -> Result<R, Status>
    where
        Q: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        self.ready().await?;
        let request = self.request(message);
        let codec: ProstCodec<Q, R> = ProstCodec::default();
        self.grpc
            .unary(request, PathAndQuery::from_static(path), codec)
            .await
            .map(tonic::Response::into_inner)
    }

    async fn streaming<Q, R>(
        &mut self,
        path: &'static str,
        first: Q,
    ) -> Result<(mpsc::Sender<Q>, Streaming<R>), Status>
    where
        Q: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        self.ready().await?;
        let (tx, rx) = mpsc::channel(4);
        tx.send(first)
            .await
            .map_err(|_| Status::internal("request stream closed"))?;
        let request = self.request(ReceiverStream::new(rx));
        let codec: ProstCodec<Q, R> = ProstCodec::default();
        let responses = self
            .grpc
            .streaming(request, PathAndQuery::from_static(path), codec)
            .await?
            .into_inner();
        Ok((tx, responses))
    }

    /// Reads every key under `prefix` at `revision` (the latest when
    /// `None`), in pages of at most [`PAGE_KEYS`] keys, all at the first
    /// page's revision: a registry of any size is read, each response
    /// within [`MAX_RESPONSE_BYTES`]. A page that is still too large (huge
    /// values) is asked for again with half as many keys.
    pub async fn get_all(
        &mut self,
        prefix: &str,
        revision: Option<i64>,
    ) -> Result<(i64, Vec<KeyValue>), Status> {
        let range_end = prefix_end(prefix.as_bytes());
        let mut key = prefix.as_bytes().to_vec();
        let mut revision = revision.unwrap_or(0);
        let mut limit = PAGE_KEYS;
        let mut kvs = Vec::new();
        loop {
            let page: Result<RangeResponse, Status> = self
                .unary(
                    "/etcdserverpb.KV/Range",
                    RangeRequest {
                        key: key.clone(),
                        range_end: range_end.clone(),
                        limit,
                        revision,
                        count_only: false,
                    },
                )
                .await;
            let page = match page {
                Err(e) if e.code() == tonic::Code::OutOfRange && limit > 1 => {
                    limit /= 2;
                    continue;
                }
                other => other?,
            };
            if revision == 0 {
                revision = page.header.as_ref().map_or(0, |h| h.revision);
            }
            let more = page.more;
            kvs.extend(page.kvs);
            match kvs.last() {
                Some(last) if more => {
                    key = last.key.clone();
                    key.push(0);
                }
                _ => return Ok((revision, kvs)),
            }
        }
    }

    /// Reads `key`, or every key under it with `prefix`, at `revision` (the
    /// latest when `None`); only the count with `count_only`.
    pub async fn get(
        &mut self,
        key: &str,
        prefix: bool,
        revision: Option<i64>,
        count_only: bool,
    ) -> Result<RangeResponse, Status> {
        let key = key.as_bytes().to_vec();
        let range_end = if prefix { prefix_end(&key) } else { Vec::new() };
        self.unary(
            "/etcdserverpb.KV/Range",
            RangeRequest {
                key,
                range_end,
                limit: 0,
                revision: revision.unwrap_or(0),
                count_only,
            },
        )
        .await
    }

    /// Writes `key`, attached to `lease` when it is not 0.
    pub async fn put(
        &mut self,
        key: &str,
        value: impl Into<Vec<u8>>,
        lease: i64,
    ) -> Result<(), Status> {
        let _: PutResponse = self
            .unary(
                "/etcdserverpb.KV/Put",
                PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: value.into(),
                    lease,
                },
            )
            .await?;
        Ok(())
    }

    /// Watches every key under `prefix` from `start_revision`.
    pub async fn watch(
        &mut self,
        prefix: &str,
        start_revision: i64,
    ) -> Result<WatchStream, Status> {
        let key = prefix.as_bytes().to_vec();
        let create = WatchRequest {
            create_request: Some(WatchCreateRequest {
                range_end: prefix_end(&key),
                key,
                start_revision,
            }),
        };
        let (requests, responses) = self.streaming("/etcdserverpb.Watch/Watch", create).await?;
        Ok(WatchStream {
            _requests: requests,
            responses,
        })
    }

    /// Grants a lease of `ttl` seconds; its id.
    pub async fn lease_grant(&mut self, ttl: i64) -> Result<i64, Status> {
        let r: LeaseGrantResponse = self
            .unary("/etcdserverpb.Lease/LeaseGrant", LeaseGrantRequest { ttl })
            .await?;
        if !r.error.is_empty() {
            return Err(Status::unknown(r.error));
        }
        Ok(r.id)
    }

    /// Revokes a lease: the keys attached to it are deleted now.
    pub async fn lease_revoke(&mut self, id: i64) -> Result<(), Status> {
        let _: LeaseRevokeResponse = self
            .unary("/etcdserverpb.Lease/LeaseRevoke", LeaseRevokeRequest { id })
            .await?;
        Ok(())
    }

    /// Keeps a lease alive: one keep-alive is sent now; [`LeaseKeeper::keep_alive`]
    /// sends the next, and each answer arrives on the stream.
    pub async fn lease_keep_alive(
        &mut self,
        id: i64,
    ) -> Result<(LeaseKeeper, Streaming<LeaseKeepAliveResponse>), Status> {
        let (requests, responses) = self
            .streaming(
                "/etcdserverpb.Lease/LeaseKeepAlive",
                LeaseKeepAliveRequest { id },
            )
            .await?;
        Ok((LeaseKeeper { id, requests }, responses))
    }
}

/// The responses of one watch; dropping it ends the watch.
pub struct WatchStream {
    _requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

impl WatchStream {
    /// The next response; `None` when etcd ended the stream.
    pub async fn message(&mut self) -> Result<Option<WatchResponse>, Status> {
        self.responses.message().await
    }
}

/// Sends keep-alives for one lease.
pub struct LeaseKeeper {
    id: i64,
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
}

impl LeaseKeeper {
    /// Sends one keep-alive.
    pub async fn keep_alive(&mut self) -> Result<(), Status> {
        self.requests
            .send(LeaseKeepAliveRequest { id: self.id })
            .await
            .map_err(|_| Status::unavailable("the keep-alive stream is closed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges_end_after_the_last_key_with_the_prefix() {
        assert_eq!(prefix_end(b"/sextant/"), b"/sextant0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }
}
