//! The floor: a null ADS server that answers from responses encoded at
//! start-up, through Sextant's own request decoder and response writer.

use super::*;

pub(super) type StreamTx = mpsc::Sender<Result<Outbound, tonic::Status>>;

/// The floor: every response pre-encoded; no registry, no translation, no
/// bookkeeping. A request without a nonce gets the full set of its type; a
/// flip pushes one pre-encoded assignment to every stream. It speaks both
/// state of the world and delta (the same resources on the other wire).
#[derive(Clone)]
pub(super) struct Floor {
    pub(super) full: Arc<BTreeMap<ResourceType, Outbound>>,
    pub(super) flips: Arc<[Outbound; 2]>,
    /// Every assignment after an even and an odd number of bursts.
    pub(super) bursts: Arc<[Outbound; 2]>,
    pub(super) streams: Arc<Mutex<Vec<(StreamTx, Wire)>>>,
}

pub(super) async fn floor(args: &FloorArgs) -> i32 {
    let mesh = fixtures::mesh(args.mesh.services, args.mesh.endpoints);
    let view = |services: Vec<Service>| {
        let id = sextant_core::RegistryId::new("memory/floor");
        let mut m = sextant_aggregate::MergeState::new(sextant_aggregate::MergeMode::Union);
        m.add_shard(id.clone());
        m.apply(&id, sextant_core::Event::Reset(services));
        Arc::new(m.build_view(true).expect("view"))
    };
    let snap = Snapshot::empty(Default::default()).next(view(mesh.clone()));
    let mut full = BTreeMap::new();
    for kind in ResourceType::ALL {
        let resources: Vec<_> = snap.resources(kind).resources.values().cloned().collect();
        full.insert(
            kind,
            Outbound {
                wire: Wire::Sotw,
                kind,
                version_info: "1".into(),
                nonce: "1".into(),
                resources: Arc::new(resources.into()),
                removed: vec![],
                changed_at: None,
            },
        );
    }
    let flip_out = |n: u64| {
        let mut services = mesh.clone();
        services[0] = flipped(&mesh, n);
        let s = Snapshot::empty(Default::default()).next(view(services));
        let name = s
            .resources(ResourceType::Endpoint)
            .resources
            .keys()
            .next()
            .cloned()
            .expect("cla");
        let r = s.get(ResourceType::Endpoint, &name).cloned().expect("cla");
        Outbound {
            wire: Wire::Sotw,
            kind: ResourceType::Endpoint,
            version_info: format!("f{n}"),
            nonce: format!("f{n}"),
            resources: Arc::new(vec![r].into()),
            removed: vec![],
            changed_at: None,
        }
    };
    let changes = args.burst;
    let burst_out = |b: u64| {
        let s = Snapshot::empty(Default::default()).next(view(after_bursts(&mesh, changes, b)));
        Outbound {
            wire: Wire::Sotw,
            kind: ResourceType::Endpoint,
            version_info: format!("b{b}"),
            nonce: format!("b{b}"),
            resources: Arc::new(
                s.resources(ResourceType::Endpoint)
                    .resources
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
                    .into(),
            ),
            removed: vec![],
            changed_at: None,
        }
    };
    let floor = Floor {
        full: Arc::new(full),
        flips: Arc::new([flip_out(0), flip_out(1)]),
        bursts: Arc::new(if changes > 0 && mesh.len() > 1 {
            [burst_out(2), burst_out(1)]
        } else {
            [flip_out(0), flip_out(1)]
        }),
        streams: Arc::default(),
    };
    // The same backlog as Sextant's xDS listener.
    let listener = sextant_xds::server::listen("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let control = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!(
        "ready {} {}",
        listener.local_addr().expect("addr"),
        control.local_addr().expect("addr")
    );
    let f = floor.clone();
    tokio::spawn(control_loop(control, None, move |numbers| {
        let f = f.clone();
        Box::pin(async move {
            // A flip pushes its assignment; a burst waits out the rollout
            // (a null server has nothing to do meanwhile), then pushes every
            // assignment once.
            let (out, reply) = match burst_args(&numbers) {
                None => (f.flips[(numbers[0] % 2) as usize].clone(), "ok".to_owned()),
                Some((_, over, n)) => {
                    tokio::time::sleep(over).await;
                    (
                        f.bursts[(n % 2) as usize].clone(),
                        format!("ok {}", over.as_micros()),
                    )
                }
            };
            let streams = f.streams.lock().expect("lock").clone();
            tokio::spawn(async move {
                for (s, wire) in streams {
                    let _ = s
                        .send(Ok(Outbound {
                            wire,
                            ..out.clone()
                        }))
                        .await;
                }
            });
            reply
        })
    }));
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let _ = tonic::transport::Server::builder()
        .add_service(AdsService::new(floor))
        .serve_with_incoming(incoming)
        .await;
    0
}

/// A request that starts a type: no nonce yet. The floor answers it with
/// the type's full set and needs nothing from ACKs.
pub(super) trait FirstOfType {
    fn first_of_type(&self) -> Option<ResourceType>;
}

impl FirstOfType for sextant_xds::server::SotwRequest {
    fn first_of_type(&self) -> Option<ResourceType> {
        self.response_nonce
            .is_empty()
            .then(|| ResourceType::from_type_url(&self.type_url))
            .flatten()
    }
}

impl FirstOfType for DeltaDiscoveryRequest {
    fn first_of_type(&self) -> Option<ResourceType> {
        self.response_nonce
            .is_empty()
            .then(|| ResourceType::from_type_url(&self.type_url))
            .flatten()
    }
}

impl Floor {
    /// One stream: answer each first request of a type with its full set,
    /// on the stream's wire.
    pub(super) fn stream<Req>(
        &self,
        wire: Wire,
        mut requests: tonic::Streaming<Req>,
    ) -> ResponseStream
    where
        Req: FirstOfType + prost::Message + Default + Send + 'static,
    {
        let floor = self.clone();
        let (tx, rx) = mpsc::channel(16);
        floor.streams.lock().expect("lock").push((tx.clone(), wire));
        tokio::spawn(async move {
            while let Ok(Some(r)) = requests.message().await {
                if let Some(out) = r.first_of_type().and_then(|k| floor.full.get(&k))
                    && tx
                        .send(Ok(Outbound {
                            wire,
                            ..out.clone()
                        }))
                        .await
                        .is_err()
                {
                    break;
                }
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }
}

/// Mounted with Sextant's own `AdsService`: the same request decoding and
/// response writer, only the handler differs.
impl AdsHandler for Floor {
    fn sotw(
        &self,
        _: sextant_xds::server::Peer,
        requests: tonic::Streaming<sextant_xds::server::SotwRequest>,
    ) -> ResponseStream {
        self.stream(Wire::Sotw, requests)
    }

    fn delta(
        &self,
        _: sextant_xds::server::Peer,
        requests: tonic::Streaming<DeltaDiscoveryRequest>,
    ) -> ResponseStream {
        self.stream(Wire::Delta, requests)
    }
}
