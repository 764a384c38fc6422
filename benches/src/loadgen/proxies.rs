//! Simulated proxies (SotW and delta) and the statistics they keep.

use super::*;

/// The first length-delimited field 1 of a message: the name of a Cluster,
/// Listener or RouteConfiguration, the cluster_name of an assignment.
pub(super) fn field_one(mut b: &[u8]) -> String {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    while let Some(key) = varint(&mut b) {
        let (tag, wt) = (key >> 3, key & 7);
        match wt {
            0 => {
                varint(&mut b);
            }
            2 => {
                let Some(len) = varint(&mut b) else { break };
                let len = len as usize;
                if len > b.len() {
                    break;
                }
                if tag == 1 {
                    return String::from_utf8_lossy(&b[..len]).into_owned();
                }
                b = &b[len..];
            }
            5 => b = b.get(4..).unwrap_or_default(),
            1 => b = b.get(8..).unwrap_or_default(),
            _ => break,
        }
    }
    String::new()
}

/// How many namespaces the simulated proxies are spread over (S7); 0:
/// proxies without identity.
pub(super) static PROXY_NAMESPACES: AtomicUsize = AtomicUsize::new(0);

/// Proxy `id`'s node: with namespaces, Istio's sidecar node id naming
/// namespace `ns-{id % N}`, as `sextant bootstrap --namespace` writes it.
fn node(id: usize) -> Node {
    let namespaces = PROXY_NAMESPACES.load(Ordering::Relaxed);
    let id = if namespaces == 0 {
        format!("proxy-{id}")
    } else {
        let ns = format!("ns-{}", id % namespaces);
        format!("sidecar~10.200.0.1~proxy-{id}.{ns}~{ns}.svc.cluster.local")
    };
    Node {
        id,
        cluster: "load".into(),
        ..Default::default()
    }
}

impl Stats {
    pub(super) fn received(&self, response: &impl prost::Message) {
        self.bytes
            .fetch_add(response.encoded_len() as u64, Ordering::Relaxed);
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// A proxy could not open its stream; the first few errors are printed.
    pub(super) fn failed(&self, e: &tonic::Status) {
        if self.failures.fetch_add(1, Ordering::Relaxed) < 3 {
            eprintln!("proxy stream failed: {e}");
        }
    }

    /// A configured proxy ACKed an assignment: the first one after each
    /// flip is that flip's.
    pub(super) fn assignment_acked(&self, epoch_seen: &mut u64, resources: usize) {
        let epoch = self.flip_epoch.load(Ordering::Acquire);
        if epoch > *epoch_seen {
            *epoch_seen = epoch;
            self.flip_resources.fetch_add(resources, Ordering::Relaxed);
            self.flip_acks.lock().expect("lock").push(Instant::now());
            self.progress.notify_one();
        }
    }
}

/// What all proxies report.
#[derive(Default)]
pub(super) struct Stats {
    pub(super) configured: Mutex<Vec<Instant>>,
    pub(super) flip_epoch: AtomicU64,
    pub(super) flip_acks: Mutex<Vec<Instant>>,
    pub(super) flip_resources: AtomicUsize,
    pub(super) progress: Notify,
    pub(super) failures: AtomicUsize,
    /// Bytes of every response the proxies received (protobuf size).
    pub(super) bytes: AtomicU64,
}

pub(super) async fn client(
    addr: SocketAddr,
) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20)
}

pub(super) fn sotw(
    type_url: &str,
    names: &[String],
    version: &str,
    nonce: &str,
    node: Option<Node>,
) -> DiscoveryRequest {
    DiscoveryRequest {
        type_url: type_url.into(),
        resource_names: names.to_vec(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        node,
        ..Default::default()
    }
}

/// One Envoy-like SotW proxy: CDS, then EDS for its clusters, then LDS, then
/// RDS; ACKs everything; records when it is fully configured and when it
/// ACKs an assignment after each flip.
pub(super) async fn sotw_proxy(addr: SocketAddr, id: usize, stats: Arc<Stats>) {
    let mut c = client(addr).await;
    let (tx, rx) = mpsc::channel(16);
    let node = node(id);
    let _ = tx.send(sotw(CDS, &[], "", "", Some(node))).await;
    let resp = match c.stream_aggregated_resources(ReceiverStream::new(rx)).await {
        Ok(r) => r,
        Err(e) => {
            stats.failed(&e);
            return;
        }
    };
    let mut stream = resp.into_inner();
    let (mut clusters, mut routes) = (Vec::new(), Vec::new());
    let (mut eds_seen, mut lds_asked, mut configured) = (false, false, false);
    let mut epoch_seen = 0;
    while let Ok(Some(r)) = stream.message().await {
        stats.received(&r);
        let names: Vec<String> = r.resources.iter().map(|a| field_one(&a.value)).collect();
        match r.type_url.as_str() {
            CDS => {
                let first = clusters.is_empty();
                clusters = names;
                let _ = tx
                    .send(sotw(CDS, &[], &r.version_info, &r.nonce, None))
                    .await;
                if first {
                    let _ = tx.send(sotw(EDS, &clusters, "", "", None)).await;
                }
            }
            EDS => {
                let _ = tx
                    .send(sotw(EDS, &clusters, &r.version_info, &r.nonce, None))
                    .await;
                if eds_seen && configured && names.iter().any(|n| n == MARKER) {
                    stats.assignment_acked(&mut epoch_seen, r.resources.len());
                }
                eds_seen = true;
                if !lds_asked {
                    lds_asked = true;
                    let _ = tx.send(sotw(LDS, &[], "", "", None)).await;
                }
            }
            LDS => {
                routes = names;
                let _ = tx
                    .send(sotw(LDS, &[], &r.version_info, &r.nonce, None))
                    .await;
                let _ = tx.send(sotw(RDS, &routes, "", "", None)).await;
            }
            RDS => {
                let _ = tx
                    .send(sotw(RDS, &routes, &r.version_info, &r.nonce, None))
                    .await;
                if !configured {
                    configured = true;
                    epoch_seen = stats.flip_epoch.load(Ordering::Acquire);
                    stats.configured.lock().expect("lock").push(Instant::now());
                    stats.progress.notify_one();
                }
            }
            _ => {}
        }
    }
}

/// One delta proxy: wildcard CDS, named EDS, then LDS and RDS.
pub(super) async fn delta_proxy(addr: SocketAddr, id: usize, stats: Arc<Stats>) {
    let mut c = client(addr).await;
    let (tx, rx) = mpsc::channel(16);
    let req = |type_url: &str, subscribe: Vec<String>, nonce: &str| DeltaDiscoveryRequest {
        type_url: type_url.into(),
        resource_names_subscribe: subscribe,
        response_nonce: nonce.into(),
        ..Default::default()
    };
    let mut first = req(CDS, vec!["*".into()], "");
    first.node = Some(node(id));
    let _ = tx.send(first).await;
    let resp = match c.delta_aggregated_resources(ReceiverStream::new(rx)).await {
        Ok(r) => r,
        Err(e) => {
            stats.failed(&e);
            return;
        }
    };
    let mut stream = resp.into_inner();
    let (mut eds_seen, mut lds_asked, mut configured, mut cds_seen) = (false, false, false, false);
    let mut epoch_seen = 0;
    while let Ok(Some(r)) = stream.message().await {
        stats.received(&r);
        let names: Vec<String> = r.resources.iter().map(|x| x.name.clone()).collect();
        let _ = tx.send(req(&r.type_url, vec![], &r.nonce)).await;
        match r.type_url.as_str() {
            CDS if !cds_seen => {
                cds_seen = true;
                let _ = tx.send(req(EDS, names, "")).await;
            }
            EDS => {
                if eds_seen && configured && names.iter().any(|n| n == MARKER) {
                    stats.assignment_acked(&mut epoch_seen, r.resources.len());
                }
                eds_seen = true;
                if !lds_asked {
                    lds_asked = true;
                    let _ = tx.send(req(LDS, vec!["*".into()], "")).await;
                }
            }
            LDS => {
                let _ = tx.send(req(RDS, names, "")).await;
            }
            RDS if !configured => {
                configured = true;
                epoch_seen = stats.flip_epoch.load(Ordering::Acquire);
                stats.configured.lock().expect("lock").push(Instant::now());
                stats.progress.notify_one();
            }
            _ => {}
        }
    }
}
