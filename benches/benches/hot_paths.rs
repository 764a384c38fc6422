//! The hot paths, measured with criterion: translating and encoding a large
//! view, merging many registries, diffing views, and the incremental
//! snapshot an endpoint flip costs.
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

criterion_group!(
    benches,
    translate_and_encode,
    endpoint_flip,
    merge_ten_registries,
    diff_views
);
criterion_main!(benches);
