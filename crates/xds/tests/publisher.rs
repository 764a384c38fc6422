//! Coalescing under paused tokio time: deterministic, no sleeps.
#![allow(clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use sextant_aggregate::{MergeMode, MergeState};
use sextant_core::{Event, Health, MeshView, RegistryId};
use sextant_testkit::fixtures;
use sextant_xds::{Debounce, Metrics, Snapshot, TranslateOptions, publisher};
use tokio::sync::watch;
use tokio::time::Instant;

struct Rig {
    merge: MergeState,
    id: RegistryId,
    views: watch::Sender<Arc<MeshView>>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    metrics: Arc<Metrics>,
}

impl Rig {
    fn new() -> Rig {
        let id = RegistryId::new("memory/a");
        let mut merge = MergeState::new(MergeMode::Union);
        merge.add_shard(id.clone());
        merge.apply(&id, Event::Reset(fixtures::mesh(10, 3)));
        let (views, rx) = watch::channel(Arc::new(MeshView::default()));
        let metrics = Arc::new(Metrics::default());
        let (snapshots, task) = publisher(
            rx,
            TranslateOptions::default(),
            Debounce::default(),
            metrics.clone(),
        );
        tokio::spawn(task);
        Rig {
            merge,
            id,
            views,
            snapshots,
            metrics,
        }
    }

    /// A rig whose first snapshot has been published.
    async fn serving() -> Rig {
        let mut rig = Rig::new();
        rig.publish(Event::Delete("none.svc".into()));
        rig.snapshots
            .wait_for(|s| s.is_ready())
            .await
            .expect("snapshot");
        rig
    }

    fn publish(&mut self, event: Event) {
        self.merge.apply(&self.id, event);
        let view = self.merge.build_view(true).expect("view");
        self.views.send_replace(Arc::new(view));
    }

    fn flip(&mut self, n: usize) {
        let mut svc = fixtures::mesh(10, 3).remove(n % 10);
        svc.endpoints[0].health = if n.is_multiple_of(2) {
            Health::Unhealthy
        } else {
            Health::Draining
        };
        self.publish(Event::Apply(svc));
    }

    /// Publishes `events`, one view each, and waits for the next snapshot:
    /// how long after the last view it came.
    async fn push(&mut self, events: impl IntoIterator<Item = Event>) -> Duration {
        let g = self.generation();
        for event in events {
            self.publish(event);
        }
        let began = Instant::now();
        self.snapshots
            .wait_for(|s| s.generation > g)
            .await
            .expect("pushed");
        began.elapsed()
    }

    fn generation(&self) -> u64 {
        self.snapshots.borrow().generation
    }
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_first_view_is_published_at_once() {
    let mut rig = Rig::new();
    rig.publish(Event::Delete("none.svc".into()));
    let began = Instant::now();
    rig.snapshots
        .wait_for(|s| s.is_ready())
        .await
        .expect("snapshot");
    assert_eq!(began.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_endpoint_changes_is_one_fast_push() {
    let mut rig = Rig::serving().await;
    let g = rig.generation();
    for n in 0..50 {
        rig.flip(n);
        settle().await;
        tokio::time::advance(Duration::from_millis(1)).await;
    }
    assert_eq!(rig.generation(), g, "still inside the burst");
    let began = Instant::now();
    rig.snapshots
        .wait_for(|s| s.generation > g)
        .await
        .expect("pushed");
    assert_eq!(rig.generation(), g + 1, "one push for the burst");
    assert!(
        began.elapsed() <= Duration::from_millis(10),
        "endpoint debounce"
    );
    assert_eq!(Metrics::get(&rig.metrics.endpoint_only_snapshots_total), 1);
    let snap = rig.snapshots.borrow().clone();
    assert!(
        snap.resources(sextant_xds::ResourceType::Cluster)
            .changed
            .is_empty(),
        "fast path: assignments only"
    );
}

#[tokio::test(start_paused = true)]
async fn structural_changes_wait_for_the_longer_debounce() {
    let mut rig = Rig::serving().await;
    let waited = rig.push([Event::Delete("svc-3.mesh.svc".into())]).await;
    assert_eq!(waited, Duration::from_millis(100));
    assert_eq!(Metrics::get(&rig.metrics.endpoint_only_snapshots_total), 0);
}

/// A port change, and a removal and an addition in one batch (the number of
/// services unchanged), are structural too.
#[tokio::test(start_paused = true)]
async fn a_port_change_or_a_swapped_service_is_not_endpoint_only() {
    let mut rig = Rig::serving().await;
    let mut reported = fixtures::mesh(10, 3);
    let mut svc = reported.remove(2);
    svc.ports[0].port += 1;
    let mut added = reported.remove(3);
    added.hostname = "new.mesh.svc".into();
    let changes: [Vec<Event>; 2] = [
        vec![Event::Apply(svc)],
        vec![Event::Delete("svc-4.mesh.svc".into()), Event::Apply(added)],
    ];
    for batch in changes {
        let services = rig.snapshots.borrow().view().services.len();
        assert_eq!(rig.push(batch).await, Duration::from_millis(100));
        assert_eq!(rig.snapshots.borrow().view().services.len(), services);
    }
    assert_eq!(Metrics::get(&rig.metrics.endpoint_only_snapshots_total), 0);
}

#[tokio::test(start_paused = true)]
async fn a_never_ending_stream_of_changes_is_still_pushed_within_the_maximum_delay() {
    let mut rig = Rig::serving().await;
    let g = rig.generation();
    let began = Instant::now();
    let mut n = 0;
    while rig.generation() == g {
        rig.flip(n);
        n += 1;
        settle().await;
        tokio::time::advance(Duration::from_millis(5)).await;
        assert!(
            began.elapsed() <= Duration::from_millis(1100),
            "no push within the maximum delay"
        );
    }
    assert!(began.elapsed() >= Duration::from_secs(1));
}
