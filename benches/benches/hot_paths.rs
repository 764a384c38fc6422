//! The hot paths, measured with criterion: translating and encoding a large
//! view, merging many registries, diffing views, and the incremental
//! snapshot an endpoint flip costs; translating traffic rules, and what
//! one rule change costs as the mesh grows.
#![allow(missing_docs, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use prost::Message;
use sextant_aggregate::{MergeMode, MergeState};
use sextant_core::{Event, Health, MeshView, RegistryId, Service};
use sextant_testkit::fixtures;
use sextant_xds::resource::{Resource, ResourceType};
use sextant_xds::snapshot::Snapshot;
use sextant_xds::translate::{self, TranslateOptions};

fn view_of(services: Vec<Service>) -> Arc<MeshView> {
    let id = RegistryId::new("memory/bench");
    let mut m = MergeState::new(MergeMode::Union);
    m.add_shard(id.clone());
    m.apply(&id, Event::Reset(services));
    Arc::new(m.build_view(true).expect("view"))
}

fn translate_and_encode(c: &mut Criterion) {
    // One service with 10,000 endpoints: the largest single assignment.
    let big = view_of(fixtures::mesh(1, 10_000));
    let svc = big.services.values().next().expect("service").clone();
    c.bench_function("translate: 10k-endpoint assignment", |b| {
        b.iter(|| black_box(translate::load_assignments(&svc)))
    });
    let cla = translate::load_assignments(&svc).remove(0);
    eprintln!(
        "10k-endpoint assignment: {} bytes encoded",
        cla.encoded_len()
    );
    c.bench_function(
        "encode: 10k-endpoint assignment (prost + xxh3 version)",
        |b| b.iter(|| black_box(Resource::encode(ResourceType::Endpoint, "c", &cla))),
    );
    // A mesh of 1,000 services x 10 endpoints, all of it.
    let mesh = view_of(fixtures::mesh(1_000, 10));
    c.bench_function("snapshot: full build, 1k services x 10 endpoints", |b| {
        b.iter(|| black_box(Snapshot::empty(TranslateOptions::default()).next(mesh.clone())))
    });
}

fn endpoint_flip(c: &mut Criterion) {
    // What one endpoint flip costs before any proxy is involved: merge,
    // publish, incremental snapshot.
    let id = RegistryId::new("memory/bench");
    let services = fixtures::mesh(1_000, 10);
    let mut m = MergeState::new(MergeMode::Union);
    m.add_shard(id.clone());
    m.apply(&id, Event::Reset(services.clone()));
    let base = Arc::new(m.build_view(true).expect("view"));
    let snap = Snapshot::empty(TranslateOptions::default()).next(base);
    let mut flipped = services[500].clone();
    flipped.endpoints[3].health = Health::Unhealthy;
    c.bench_function(
        "flip: merge + view + incremental snapshot, 1k services",
        |b| {
            b.iter_batched(
                || (),
                |()| {
                    m.apply(&id, Event::Apply(flipped.clone()));
                    let view = Arc::new(m.build_view(false).expect("changed"));
                    let next = snap.next(view);
                    m.apply(&id, Event::Apply(services[500].clone()));
                    m.build_view(false);
                    black_box(next.encoded)
                },
                BatchSize::SmallInput,
            )
        },
    );
}

fn merge_ten_registries(c: &mut Criterion) {
    // Ten registries reporting the same 1,000 services (union merge).
    let ids: Vec<RegistryId> = (0..10)
        .map(|i| RegistryId::new(format!("memory/r{i}")))
        .collect();
    let per: Vec<Vec<Service>> = (0..10)
        .map(|r| {
            let mut s = fixtures::mesh(1_000, 2);
            for svc in &mut s {
                for (i, ep) in svc.endpoints.iter_mut().enumerate() {
                    ep.address = fixtures::endpoint_ip((r * 100_000 + i) as u32).into();
                }
            }
            s
        })
        .collect();
    c.bench_function("merge: 10 registries x 1k services, full build", |b| {
        b.iter_batched(
            || {
                let mut m = MergeState::new(MergeMode::Union);
                for id in &ids {
                    m.add_shard(id.clone());
                }
                m
            },
            |mut m| {
                for (id, services) in ids.iter().zip(&per) {
                    m.apply(id, Event::Reset(services.clone()));
                }
                black_box(m.build_view(true))
            },
            BatchSize::LargeInput,
        )
    });
}

fn diff_views(c: &mut Criterion) {
    // The delta diff between two views of 1,000 services, 10 changed.
    let services = fixtures::mesh(1_000, 10);
    let id = RegistryId::new("memory/bench");
    let mut m = MergeState::new(MergeMode::Union);
    m.add_shard(id.clone());
    m.apply(&id, Event::Reset(services.clone()));
    let a = m.build_view(true).expect("view");
    for s in services.iter().step_by(100) {
        let mut s = s.clone();
        s.endpoints[0].weight = 7;
        m.apply(&id, Event::Apply(s));
    }
    let b = m.build_view(false).expect("view");
    c.bench_function("diff: 1k-service views, 10 changed", |bench| {
        bench.iter(|| black_box(b.changes_since(&a)))
    });
}

/// `n` services of 10 endpoints labelled `version: v0..v4`, and for each a
/// route rule (a header route and a 90/10 split between subsets) and a
/// destination policy (ring hash, limits, outlier detection, 5 subsets).
fn rules_mesh(n: usize) -> (Vec<Service>, Vec<sextant_core::Rule>) {
    let mut services = fixtures::mesh(n, 10);
    let mut rules = Vec::new();
    for s in &mut services {
        for (i, ep) in s.endpoints.iter_mut().enumerate() {
            ep.labels.insert("version".into(), format!("v{}", i % 5));
        }
        rules.push(route_rule(&s.hostname, 90));
        let policy: sextant_core::PolicyEntry = serde_yaml_ng::from_str(&format!(
            "name: {h}\nnamespace: mesh\nhost: {h}\ntrafficPolicy:\n  \
             loadBalancer: {{consistentHash: {{httpHeaderName: x-user}}}}\n  \
             connectionPool: {{tcp: {{maxConnections: 100}}, http: {{http2MaxRequests: 1000}}}}\n  \
             outlierDetection: {{consecutive5xxErrors: 5, interval: 10s}}\n\
             subsets: [{subsets}]\n",
            h = s.hostname,
            subsets = (0..5)
                .map(|v| format!("{{name: v{v}, labels: {{version: v{v}}}}}"))
                .collect::<Vec<_>>()
                .join(", "),
        ))
        .expect("policy");
        rules.push(policy.into());
    }
    (services, rules)
}

fn route_rule(host: &str, to_v0: u32) -> sextant_core::Rule {
    let route: sextant_core::RouteEntry = serde_yaml_ng::from_str(&format!(
        "name: {host}\nnamespace: mesh\nhosts: [{host}]\nhttp:\n\
         - match: [{{headers: {{x-user: {{exact: alice}}}}}}]\n  route: [{{destination: {{host: {host}, subset: v1}}}}]\n\
         - route:\n  - {{destination: {{host: {host}, subset: v0}}, weight: {to_v0}}}\n  - {{destination: {{host: {host}, subset: v1}}, weight: {}}}\n  \
           retries: {{attempts: 2}}\n  timeout: 5s\n",
        100 - to_v0
    ))
    .expect("route");
    route.into()
}

/// Translating rules: a whole mesh of them, then one rule change, for
/// meshes of growing size. A rule change re-translates the hosts the rule
/// binds to; the rest is shared, and the outbound route table is assembled
/// from each service's encoded virtual hosts (a copy, not a translation).
fn rules(c: &mut Criterion) {
    let rules_id = RegistryId::new("memory/rules");
    let services_id = RegistryId::new("memory/bench");
    for n in [250usize, 1_000, 4_000] {
        let (services, rules) = rules_mesh(n);
        let mut m = MergeState::new(MergeMode::Union);
        m.add_shard(services_id.clone());
        m.add_rule_shard(rules_id.clone());
        m.apply(&services_id, Event::Reset(services));
        m.apply_rules(&rules_id, Event::Reset(rules));
        let base = Arc::new(m.build_view(true).expect("view"));
        if n == 1_000 {
            c.bench_function(
                "rules: full snapshot, 1k hosts x (route rule + policy with 5 subsets)",
                |b| {
                    b.iter(|| {
                        black_box(Snapshot::empty(TranslateOptions::default()).next(base.clone()))
                    })
                },
            );
        }
        let snap = Snapshot::empty(TranslateOptions::default()).next(base);
        let host = format!("svc-{}.mesh.svc", n / 2);
        let (changed, back) = (route_rule(&host, 50), route_rule(&host, 90));
        c.bench_function(
            &format!("rules: one rule change, merge + view + incremental snapshot, {n} hosts"),
            |b| {
                b.iter(|| {
                    m.apply_rules(&rules_id, Event::Apply(changed.clone()));
                    let view = Arc::new(m.build_view(false).expect("changed"));
                    let next = snap.next(view);
                    m.apply_rules(&rules_id, Event::Apply(back.clone()));
                    m.build_view(false);
                    black_box(next.encoded)
                })
            },
        );
    }
}

criterion_group!(
    benches,
    translate_and_encode,
    endpoint_flip,
    merge_ten_registries,
    diff_views,
    rules
);
criterion_main!(benches);
