use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest;

use super::held::{Held, HeldSet};
use super::plan::PlanCache;
use super::subscriptions::{Interned, NameSet, name_hash};
use super::type_state::Phase;
use super::*;
use crate::translate::TranslateOptions;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use sextant_aggregate::{MergeMode, MergeState};
use sextant_core::{Event, Health, MeshView, RegistryId, Service};

/// A mesh whose views become snapshots, twice over: `shared` for the
/// connections under test, `lone` (equal content, its own plan caches)
/// for a reference connection that never shares a plan.
struct Mesh {
    merge: MergeState,
    id: RegistryId,
    services: Vec<Service>,
    shared: Serving,
    lone: Serving,
    /// The SotW subscriptions of the connections under test.
    subscriptions: Arc<Subscriptions>,
}

impl Mesh {
    fn new(services: usize) -> Mesh {
        let id = RegistryId::new("memory/a");
        let mut merge = MergeState::new(MergeMode::Union);
        merge.add_shard(id.clone());
        let services = sextant_testkit::fixtures::mesh(services, 3);
        merge.apply(&id, Event::Reset(services.clone()));
        let empty = Arc::new(Snapshot::empty(TranslateOptions::default()));
        let mut mesh = Mesh {
            merge,
            id,
            services,
            shared: Serving::alone(empty.clone()),
            lone: Serving::alone(empty),
            subscriptions: Arc::default(),
        };
        mesh.publish();
        mesh
    }

    fn publish(&mut self) {
        let view: Arc<MeshView> = Arc::new(self.merge.build_view(true).expect("view"));
        self.shared = Serving::alone(Arc::new(self.shared.next(view.clone())));
        self.lone = Serving::alone(Arc::new(self.lone.next(view)));
    }

    /// Flips one endpoint's health in service `i`.
    fn flip(&mut self, i: usize) {
        let e = &mut self.services[i].endpoints[0];
        e.health = match e.health {
            Health::Healthy => Health::Unhealthy,
            _ => Health::Healthy,
        };
        self.merge
            .apply(&self.id, Event::Apply(self.services[i].clone()));
        self.publish();
    }

    /// Adds a copy of service 0 under `host` (new clusters, a new
    /// virtual host).
    fn add(&mut self, host: &str) {
        let mut s = self.services[0].clone();
        s.hostname = sextant_core::Hostname::new(host);
        self.merge.apply(&self.id, Event::Apply(s.clone()));
        self.services.push(s);
        self.publish();
    }

    /// Removes service `i` (its cluster leaves).
    fn remove(&mut self, i: usize) {
        let gone = self.services.remove(i);
        self.merge.apply(&self.id, Event::Delete(gone.hostname));
        self.publish();
    }
}

fn sotw(kind: ResourceType, names: &[&str], nonce: &str) -> SotwRequest {
    let mut req = SotwRequest {
        type_url: kind.type_url().into(),
        response_nonce: nonce.into(),
        ..Default::default()
    };
    for n in names {
        req.names.push(n);
    }
    req
}

/// What a response says, comparable across snapshots: type, version,
/// resources (name, version), removed names.
type Gist = (ResourceType, String, Vec<(String, String)>, Vec<String>);

fn gist(out: &Outbound) -> Gist {
    (
        out.kind,
        out.version_info.clone(),
        out.resources
            .iter()
            .map(|r| (r.name.to_string(), r.version.to_string()))
            .collect(),
        out.removed.iter().map(|n| n.to_string()).collect(),
    )
}

/// An Envoy-like SotW client: subscribes to CDS (wildcard), EDS for
/// every cluster it holds, LDS and RDS; ACKs unless told to NACK.
struct Proxy {
    state: ConnState,
    clusters: Vec<String>,
    routes: Vec<String>,
}

impl Proxy {
    fn new(subscriptions: &Arc<Subscriptions>) -> Proxy {
        let mut state = ConnState::new(Wire::Sotw, subscriptions.clone());
        state.on_sotw(sotw(ResourceType::Cluster, &[], ""));
        state.on_sotw(sotw(ResourceType::Listener, &[], ""));
        Proxy {
            state,
            clusters: Vec::new(),
            routes: Vec::new(),
        }
    }

    /// One response out and its answer in; `None` when nothing is due.
    fn step(&mut self, snap: &Serving, nack: bool) -> Option<Outbound> {
        let out = self.state.pump(snap)?;
        let names: Vec<String> = out.resources.iter().map(|r| r.name.to_string()).collect();
        let mut answer = sotw(out.kind, &[], &out.nonce);
        match out.kind {
            ResourceType::Cluster if !nack => self.clusters = names,
            ResourceType::Listener if !nack => self.routes = vec!["outbound_http".into()],
            _ => {}
        }
        let subscribe = |list: &[String]| {
            let mut r = sotw(ResourceType::Endpoint, &[], "");
            for n in list {
                r.names.push(n);
            }
            r
        };
        match out.kind {
            ResourceType::Cluster => {
                // Envoy restates EDS with the new clusters, then ACKs.
                let mut eds = subscribe(&self.clusters);
                eds.response_nonce = self
                    .state
                    .of(ResourceType::Endpoint)
                    .last_nonce()
                    .to_owned();
                self.state.on_sotw(eds);
            }
            ResourceType::Listener => {
                let mut rds = sotw(ResourceType::Route, &[], "");
                for n in &self.routes {
                    rds.names.push(n);
                }
                rds.response_nonce = self.state.of(ResourceType::Route).last_nonce().to_owned();
                self.state.on_sotw(rds);
            }
            _ => {}
        }
        let restated: Vec<String> = match out.kind {
            ResourceType::Endpoint => self.clusters.clone(),
            ResourceType::Route => self.routes.clone(),
            _ => Vec::new(),
        };
        for n in &restated {
            answer.names.push(n);
        }
        if nack {
            answer.error_detail = Some(RpcStatus {
                message: "rejected".into(),
                ..Default::default()
            });
        }
        self.state.on_sotw(answer);
        Some(out)
    }
}

/// A simulated client: takes the next response and answers it.
trait Client {
    fn next(&mut self, snap: &Serving) -> Option<Outbound>;

    /// Steps until nothing is due; every response's gist.
    fn settle(&mut self, snap: &Serving) -> Vec<Gist> {
        let mut seen = Vec::new();
        while let Some(out) = self.next(snap) {
            seen.push(gist(&out));
            assert!(seen.len() < 50, "does not settle");
        }
        seen
    }
}

impl Client for Proxy {
    fn next(&mut self, snap: &Serving) -> Option<Outbound> {
        self.step(snap, false)
    }
}

/// Settles the lone reference client on its snapshot, then each of
/// `clients` on the shared one: each must see what the lone one saw.
fn round<C: Client>(mesh: &Mesh, clients: &mut [C], lone: &mut C) -> Vec<Gist> {
    let want = lone.settle(&mesh.lone);
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(
            c.settle(&mesh.shared),
            want,
            "client {i} differs from the lone one"
        );
    }
    want
}

#[test]
fn connections_in_the_same_state_share_plans_and_send_what_a_lone_one_sends() {
    let mut mesh = Mesh::new(20);
    let mut proxies: Vec<Proxy> = (0..4).map(|_| Proxy::new(&mesh.subscriptions)).collect();
    let mut lone = Proxy::new(&Arc::default());
    let first = round(&mesh, &mut proxies, &mut lone);
    assert_eq!(
        first.iter().map(|g| g.0).collect::<Vec<_>>(),
        [
            ResourceType::Cluster,
            ResourceType::Endpoint,
            ResourceType::Listener,
            ResourceType::Route
        ]
    );
    let shared_plans = mesh.shared.plans.len();
    assert!(shared_plans > 0 && mesh.lone.plans.len() == shared_plans);
    // Every proxy but the one that computed a plan took the shared set.
    for kind in [ResourceType::Cluster, ResourceType::Endpoint] {
        let bases: Vec<_> = proxies[1..]
            .iter()
            .map(|p| p.state.of(kind).held_set().base().cloned().expect("base"))
            .collect();
        assert!(bases.iter().all(|b| Arc::ptr_eq(b, &bases[0])), "{kind}");
        assert!(
            proxies[1..]
                .iter()
                .all(|p| !p.state.of(kind).held_set().diverges())
        );
    }

    for i in [3, 3, 7] {
        mesh.flip(i);
        let got = round(&mesh, &mut proxies, &mut lone);
        assert_eq!(got.len(), 1, "one assignment per flip");
    }
    mesh.remove(5);
    let got = round(&mesh, &mut proxies, &mut lone);
    let order: Vec<_> = got.iter().map(|g| g.0).collect();
    assert_eq!(
        order,
        [ResourceType::Route, ResourceType::Cluster],
        "{got:?}"
    );
    // Each round the first proxy computes the plan and applies it change
    // by change; the others share its result, and the first moves onto
    // that too before its next plan.
    for _ in 0..3 {
        mesh.flip(1);
        round(&mesh, &mut proxies, &mut lone);
        fn eds(p: &Proxy) -> &HeldSet {
            p.state.of(ResourceType::Endpoint).held_set()
        }
        let shared = eds(&proxies[1]).base().cloned().expect("base");
        assert!(proxies[1..].iter().all(|p| {
            !eds(p).diverges() && eds(p).base().is_some_and(|b| Arc::ptr_eq(b, &shared))
        }));
        assert_eq!(eds(&proxies[0]).digest(), eds(&proxies[1]).digest());
        assert_eq!(
            eds(&proxies[0]).differences(),
            1,
            "one change on the shared base"
        );
    }
    // And the names they subscribe with are one shared set, the first
    // proxy's too (its requests were the first of their kind).
    let names = |p: &Proxy| p.state.of(ResourceType::Endpoint).names().clone();
    assert!(
        proxies
            .iter()
            .all(|p| Arc::ptr_eq(&names(p), &names(&proxies[0])))
    );
    // The proxies' subscriptions are in the server's table (pruning is
    // tested in subscriptions_are_shared_by_their_encoded_names...).
    assert!(mesh.subscriptions.size().0 >= 2);
}

/// An Envoy-like delta client: wildcard CDS and LDS, EDS and RDS by
/// name for what it holds.
struct DeltaProxy {
    state: ConnState,
}

impl DeltaProxy {
    fn new(subscriptions: &Arc<Subscriptions>) -> DeltaProxy {
        let mut state = ConnState::new(Wire::Delta, subscriptions.clone());
        for kind in [ResourceType::Cluster, ResourceType::Listener] {
            state.on_delta(DeltaDiscoveryRequest {
                type_url: kind.type_url().into(),
                ..Default::default()
            });
        }
        DeltaProxy { state }
    }
}

impl Client for DeltaProxy {
    fn next(&mut self, snap: &Serving) -> Option<Outbound> {
        let out = self.state.pump(snap)?;
        let then = match out.kind {
            ResourceType::Cluster => Some(ResourceType::Endpoint),
            ResourceType::Listener => Some(ResourceType::Route),
            _ => None,
        };
        if let Some(kind) = then {
            let names = if kind == ResourceType::Route {
                if out.resources.is_empty() {
                    vec![]
                } else {
                    vec!["outbound_http".to_string()]
                }
            } else {
                out.resources.iter().map(|r| r.name.to_string()).collect()
            };
            self.state.on_delta(DeltaDiscoveryRequest {
                type_url: kind.type_url().into(),
                resource_names_subscribe: names,
                resource_names_unsubscribe: out.removed.iter().map(|n| n.to_string()).collect(),
                ..Default::default()
            });
        }
        self.state.on_delta(DeltaDiscoveryRequest {
            type_url: out.kind.type_url().into(),
            response_nonce: out.nonce.clone(),
            ..Default::default()
        });
        Some(out)
    }
}

#[test]
fn delta_connections_share_plans_and_send_what_a_lone_one_sends() {
    let mut mesh = Mesh::new(12);
    let mut proxies: Vec<DeltaProxy> = (0..3)
        .map(|_| DeltaProxy::new(&mesh.subscriptions))
        .collect();
    let mut lone = DeltaProxy::new(&Arc::default());
    assert_eq!(round(&mesh, &mut proxies, &mut lone).len(), 4);
    let eds = |p: &DeltaProxy| {
        p.state
            .of(ResourceType::Endpoint)
            .held_set()
            .base()
            .cloned()
    };
    let (b1, b2) = (
        eds(&proxies[1]).expect("base"),
        eds(&proxies[2]).expect("base"),
    );
    assert!(
        Arc::ptr_eq(&b1, &b2),
        "new delta subscriptions share one plan"
    );
    mesh.flip(2);
    assert_eq!(round(&mesh, &mut proxies, &mut lone).len(), 1);
    mesh.remove(4);
    let got = round(&mesh, &mut proxies, &mut lone);
    assert!(
        got.iter()
            .any(|g| g.0 == ResourceType::Cluster && g.3.len() == 1),
        "{got:?}"
    );
}

#[test]
fn a_nack_of_a_shared_response_restores_only_that_connection() {
    let mut mesh = Mesh::new(10);
    let mut proxies: Vec<Proxy> = (0..3).map(|_| Proxy::new(&mesh.subscriptions)).collect();
    for p in &mut proxies {
        p.settle(&mesh.shared);
    }
    mesh.flip(2);
    let before = proxies[2]
        .state
        .of(ResourceType::Endpoint)
        .held_set()
        .digest();
    let acked_before = proxies[2]
        .state
        .of(ResourceType::Endpoint)
        .acked_version()
        .to_owned();
    let a = proxies[0].step(&mesh.shared, false).expect("flip for 0");
    let b = proxies[1].step(&mesh.shared, false).expect("flip for 1");
    let c = proxies[2]
        .step(&mesh.shared, true)
        .expect("flip for 2, rejected");
    assert_eq!(gist(&a), gist(&b));
    assert_eq!(gist(&b), gist(&c));
    fn eds(p: &Proxy) -> &TypeState {
        p.state.of(ResourceType::Endpoint)
    }
    assert_eq!(
        eds(&proxies[2]).held_set().digest(),
        before,
        "the rejecting proxy holds what it held"
    );
    assert_eq!(
        eds(&proxies[2]).acked_version(),
        acked_before,
        "the rejecting proxy acknowledged nothing new"
    );
    assert_ne!(eds(&proxies[0]).held_set().digest(), before);
    assert_eq!(
        eds(&proxies[0]).held_set().digest(),
        eds(&proxies[1]).held_set().digest()
    );
    // The rejected version is not sent again; the next change is, to all.
    assert!(proxies[2].step(&mesh.shared, false).is_none());
    mesh.flip(4);
    let all: Vec<_> = proxies.iter_mut().map(|p| p.settle(&mesh.shared)).collect();
    assert_eq!(all[0], all[1]);
    assert_eq!(all[2].len(), 1);
    assert_eq!(all[2][0].2, all[0][0].2, "the same assignment");
    assert_ne!(
        all[2][0].1, all[0][0].1,
        "a different set held, a different version"
    );
}

/// What a proxy holds as `sextant status NODE` reads it: while a response
/// is in flight, the acknowledged versions (not the ones sent) and the
/// names the response changes; once acknowledged, the new versions.
/// Both ways a response is planned: computed by the connection (its undo
/// lists names) and shared from another (its undo is the whole set).
#[test]
fn held_now_gives_acknowledged_versions_and_names_in_flight() {
    let mut mesh = Mesh::new(10);
    let mut proxies: Vec<Proxy> = (0..2).map(|_| Proxy::new(&mesh.subscriptions)).collect();
    for p in &mut proxies {
        p.settle(&mesh.shared);
    }
    let eds_before = proxies[0].state.of(ResourceType::Endpoint).held_now();
    assert!(eds_before.in_flight.is_empty());
    mesh.flip(2);
    for (i, p) in proxies.iter_mut().enumerate() {
        p.state.take_plan_counts();
        let out = p.state.pump(&mesh.shared).expect("the flip");
        assert_eq!(out.kind, ResourceType::Endpoint);
        let (_, shared) = p.state.take_plan_counts();
        assert_eq!(shared > 0, i == 1, "the first computes, the second shares");
        let changed = out.resources.iter().next().expect("one assignment").clone();
        let now = p.state.of(ResourceType::Endpoint).held_now();
        assert_eq!(now.in_flight, vec![changed.name.clone()], "proxy {i}");
        assert_eq!(
            now.acked.get(&changed.name),
            eds_before.acked.get(&changed.name),
            "proxy {i}: the acknowledged version, not the one sent"
        );
        assert_ne!(now.acked.get(&changed.name), Some(&changed.version));
        assert_eq!(now.acked.len(), eds_before.acked.len(), "proxy {i}");
        // Acknowledged: the new version, nothing in flight.
        let mut ack = sotw(ResourceType::Endpoint, &[], &out.nonce);
        for n in &p.clusters {
            ack.names.push(n);
        }
        p.state.on_sotw(ack);
        let after = p.state.of(ResourceType::Endpoint).held_now();
        assert!(after.in_flight.is_empty(), "proxy {i}");
        assert_eq!(after.acked.get(&changed.name), Some(&changed.version));
    }
}

#[test]
fn bulk_and_one_by_one_subscriptions_give_the_same_set_and_digest() {
    let arcs = |xs: &[&str]| xs.iter().map(|x| Arc::<str>::from(*x)).collect::<Vec<_>>();
    let mut bulk = TypeState::new(ResourceType::Endpoint);
    bulk.subscribe_all(arcs(&["c", "a", "b", "a"]));
    let mut single = TypeState::new(ResourceType::Endpoint);
    for n in arcs(&["a", "b", "c"]) {
        single.subscribe(n);
    }
    assert_eq!(bulk.names(), single.names());
    assert_eq!(bulk.names_digest(), single.names_digest());
    assert_eq!(bulk.owed(), 3);
    bulk.subscribe_all(arcs(&["d", "a"]));
    single.subscribe("d".into());
    assert_eq!(bulk.names(), single.names());
    assert_eq!(bulk.names_digest(), single.names_digest());
    bulk.unsubscribe("b");
    let acd = ["a", "c", "d"].iter().fold(0, |d, n| d ^ name_hash(n));
    assert_eq!(bulk.names_digest(), acd);
}

#[test]
fn subscriptions_are_shared_by_their_encoded_names_and_leave_with_their_last_user() {
    let table = Arc::new(Subscriptions::default());
    let request = |names: &[&str]| sotw(ResourceType::Endpoint, names, "");
    let mut a = ConnState::new(Wire::Sotw, table.clone());
    let mut b = ConnState::new(Wire::Sotw, table.clone());
    a.on_sotw(request(&["x", "y"]));
    b.on_sotw(request(&["x", "y"]));
    let eds = |c: &ConnState| c.of(ResourceType::Endpoint).names().clone();
    assert!(Arc::ptr_eq(&eds(&a), &eds(&b)), "one set for one list");
    // The same names in another order: another entry, an equal set.
    let mut c = ConnState::new(Wire::Sotw, table.clone());
    c.on_sotw(request(&["y", "x"]));
    assert_eq!(eds(&c), eds(&a));
    assert_eq!(table.size(), (2, 4));
    // A list offered under a digest already taken by other names is
    // used but not shared.
    let digest = a
        .of(ResourceType::Endpoint)
        .request_digest()
        .expect("digest");
    let forged = Interned {
        entries: b"other".to_vec(),
        names: Arc::default(),
        digest: 0,
        star: false,
        request_digest: digest,
    };
    let got = table.offer(ResourceType::Endpoint, forged);
    assert_eq!(got.entries, b"other");
    table.release(ResourceType::Endpoint, got);
    assert!(Arc::ptr_eq(&eds(&a), &eds(&b)));
    assert_eq!(table.size(), (2, 4));
    // A connection that changes its list lets go of the old one; the
    // last user of an entry removes it, with its stream or its change.
    c.on_sotw(request(&["z"]));
    assert_eq!(table.size(), (2, 3), "[y, x] left with its only user");
    drop(a);
    assert_eq!(table.size(), (2, 3), "b still uses [x, y]");
    drop(b);
    assert_eq!(table.size(), (1, 1));
    drop(c);
    assert_eq!(table.size(), (0, 0));
}

#[test]
fn the_plan_cache_is_bounded_by_the_names_its_plans_hold() {
    let mut mesh = Mesh::new(2);
    // The rule at a smaller bound than MAX_CACHED_PLAN_NAMES, which a
    // debug build takes a minute to fill.
    let bound = 60_000;
    mesh.shared.plans = Arc::new(PlanCache::bounded(bound));
    let table = Arc::new(Subscriptions::default());
    // Distinct subscriptions of many names each: their plans are
    // computed and applied, but the cache stops taking them.
    // (Each under the per-type limit, MAX_NAMES_PER_TYPE.)
    let big: Vec<String> = (0..bound / 6)
        .map(|i| format!("outbound|80||n{i}.svc"))
        .collect();
    let mut conns = Vec::new();
    for k in 0..8 {
        let mut c = ConnState::new(Wire::Sotw, table.clone());
        let mut names: Vec<&str> = big.iter().map(String::as_str).collect();
        let own = format!("own-{k}");
        names.push(&own);
        c.on_sotw(sotw(ResourceType::Endpoint, &names, ""));
        let out = c.pump(&mesh.shared).expect("an answer");
        assert_eq!(out.kind, ResourceType::Endpoint);
        conns.push(c);
    }
    let (plans, names) = mesh.shared.plans.size();
    assert!(names <= bound, "{names} names in {plans} plans");
    assert_eq!(plans, 5, "six would hold more than the bound");
    // Plans stay while a connection holds their names, and leave with
    // the last one.
    mesh.shared.plans.prune_unused();
    assert_eq!(mesh.shared.plans.size(), (plans, names));
    drop(conns.remove(0));
    mesh.shared.plans.prune_unused();
    assert_eq!(mesh.shared.plans.size().0, plans - 1);
    drop(conns);
    mesh.shared.plans.prune_unused();
    assert_eq!(mesh.shared.plans.size(), (0, 0));
    assert_eq!(table.size(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn the_eds_wait_ends_on_time_even_while_clusters_await_their_ack() {
    let mesh = Mesh::new(3);
    let ack = std::time::Duration::from_secs(30);
    let mut p = Proxy::new(&mesh.subscriptions);
    // CDS goes out (wildcard: the client will want its endpoints) and
    // is not acknowledged, nor are endpoints asked for.
    let cds = p.state.pump(&mesh.shared).expect("cds");
    assert_eq!(cds.kind, ResourceType::Cluster);
    assert!(
        p.state.pump(&mesh.shared).is_none(),
        "listeners wait for EDS"
    );
    let sent = p.state.in_flight_since().expect("in flight");
    assert_eq!(p.state.next_deadline(ack), Some(sent + EDS_WAIT));
    // The wait ends: listeners go out though CDS is still unacknowledged
    // (they refer only to clusters already sent), and the timer moves on
    // to the oldest ACK deadline instead of firing again.
    tokio::time::advance(EDS_WAIT).await;
    let next = p.state.pump(&mesh.shared).expect("lds");
    assert_eq!(next.kind, ResourceType::Listener);
    assert_eq!(p.state.next_deadline(ack), Some(sent + ack));
    // Past the ACK deadline, both unacknowledged responses expire.
    tokio::time::advance(ack).await;
    assert_eq!(
        p.state.expire_in_flight(ack),
        [ResourceType::Cluster, ResourceType::Listener]
    );
    assert_eq!(p.state.next_deadline(ack), None);
}

/// Envoy acknowledges a CDS response that adds clusters only once they
/// have warmed, and they warm on their endpoints. Those, and the routes
/// that use the clusters, must go out while CDS waits for its ACK; only
/// what refers to clusters not sent yet waits.
#[test]
fn new_clusters_get_their_endpoints_before_the_clusters_are_acknowledged() {
    let mut mesh = Mesh::new(2);
    let mut p = Proxy::new(&mesh.subscriptions);
    p.settle(&mesh.shared);
    let eds_request = |p: &Proxy, clusters: &[String]| {
        let nonce = p.state.of(ResourceType::Endpoint).last_nonce().to_owned();
        let mut r = sotw(ResourceType::Endpoint, &[], &nonce);
        for n in clusters {
            r.names.push(n);
        }
        r
    };

    mesh.add("added.test.svc");
    let cds = p.state.pump(&mesh.shared).expect("cds");
    assert_eq!(cds.kind, ResourceType::Cluster);
    let clusters: Vec<String> = cds.resources.iter().map(|r| r.name.to_string()).collect();
    let new: Vec<&String> = clusters
        .iter()
        .filter(|n| n.ends_with("added.test.svc"))
        .collect();
    assert!(!new.is_empty());
    // Like Envoy: ask for the new clusters' endpoints, hold the CDS ACK.
    p.state.on_sotw(eds_request(&p, &clusters));
    let eds = p
        .state
        .pump(&mesh.shared)
        .expect("eds while CDS is in flight");
    assert_eq!(eds.kind, ResourceType::Endpoint);
    let sent: Vec<String> = eds.resources.iter().map(|r| r.name.to_string()).collect();
    for n in &new {
        assert!(sent.contains(n), "{n} missing from {sent:?}");
    }
    let rds = p
        .state
        .pump(&mesh.shared)
        .expect("routes to the sent clusters");
    assert_eq!(rds.kind, ResourceType::Route);
    assert!(p.state.pump(&mesh.shared).is_none());

    // Another service arrives while CDS still waits: its routes must
    // not go out before its clusters can.
    p.state.on_sotw(eds_request(&p, &clusters));
    p.state
        .on_sotw(sotw(ResourceType::Route, &["outbound_http"], &rds.nonce));
    mesh.add("later.test.svc");
    assert!(
        p.state.pump(&mesh.shared).is_none(),
        "routes to unsent clusters went out"
    );
    p.state
        .on_sotw(sotw(ResourceType::Cluster, &[], &cds.nonce));
    let cds = p.state.pump(&mesh.shared).expect("the later clusters");
    assert_eq!(cds.kind, ResourceType::Cluster);
    assert!(
        cds.resources
            .iter()
            .any(|r| r.name.ends_with("later.test.svc"))
    );
}

#[test]
fn a_digest_collision_does_not_share_a_plan() {
    let mesh = Mesh::new(5);
    // The first computes the plans; the others take them.
    let mut proxies: Vec<Proxy> = (0..4).map(|_| Proxy::new(&mesh.subscriptions)).collect();
    for p in &mut proxies {
        p.settle(&mesh.shared);
    }
    let [_, a, b, c] = &mut proxies[..] else {
        unreachable!()
    };
    let eds_a = a.state.of(ResourceType::Endpoint);
    let eds_b = b.state.of_mut(ResourceType::Endpoint);
    let plan = eds_a.compute(&mesh.shared, Phase::Additions, Wire::Sotw);
    assert!(eds_b.matches(&plan));
    // Other names with the same digest and count.
    let mut other: NameSet = eds_b.names().iter().skip(1).cloned().collect();
    other.insert("outbound|1||elsewhere".into());
    eds_b.set_names(Arc::new(other));
    assert!(
        !eds_b.matches(&plan),
        "names are compared, not only their digest"
    );
    // Another held version with the same digest and count.
    let eds_c = c.state.of_mut(ResourceType::Endpoint).held_set_mut();
    let first = eds_c.iter().next().expect("held").name().clone();
    let stand_in = Held::declared(ResourceType::Endpoint, first.clone(), "other".into());
    let digest = eds_c.digest();
    eds_c.set(first, Some(stand_in));
    eds_c.force_digest(digest);
    let eds_c = c.state.of(ResourceType::Endpoint);
    assert!(
        !eds_c.matches(&plan),
        "held versions are compared, not only their digest"
    );
}
