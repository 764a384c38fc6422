//! Turns published views into snapshots, coalescing changes that arrive
//! close together into one push.

use std::sync::Arc;
use std::time::Duration;

use sextant_core::MeshView;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use crate::translate::TranslateOptions;

/// How long to wait for more changes before pushing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Debounce {
    /// Quiet time after an endpoint-only change. Default 10 ms: a burst of
    /// endpoint events (a rollout) becomes one push, yet a single flip reaches
    /// proxies well within 50 ms (Istio's 100 ms here is what istio#14349
    /// complains about).
    pub endpoints: Duration,
    /// Quiet time after a change to services, ports or routes. Default
    /// 100 ms, Pilot's: these touch every resource type and several round
    /// trips per proxy, so batching them matters more.
    pub config: Duration,
    /// A push happens at most this long after the first change of a batch,
    /// however busy the registries are. Default 1 s.
    pub max_delay: Duration,
}

impl Default for Debounce {
    fn default() -> Self {
        Debounce {
            endpoints: Duration::from_millis(10),
            config: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        }
    }
}

/// True when nothing but endpoints changed between `current`'s view and
/// `view`: no service added, removed or reconfigured. Read from the
/// generation the aggregator stamps on each service when anything but its
/// endpoints changes (an added service carries a newer one; a removal
/// changes the count), so it costs one pass over the services without
/// comparing any. It runs on every view during a rollout.
fn endpoint_only(current: &Snapshot, view: &MeshView) -> bool {
    let old = current.view();
    current.is_ready()
        && view.services.len() == old.services.len()
        && view
            .services
            .values()
            .all(|s| s.config_generation <= old.generation)
}

/// Builds snapshots from `views`; the receiver carries the latest.
/// The returned future runs until `views`' sender is dropped.
pub fn publisher(
    mut views: watch::Receiver<Arc<MeshView>>,
    options: TranslateOptions,
    debounce: Debounce,
    metrics: Arc<Metrics>,
) -> (
    watch::Receiver<Arc<Snapshot>>,
    impl std::future::Future<Output = ()> + Send,
) {
    let (tx, rx) = watch::channel(Arc::new(Snapshot::empty(options)));
    let task = async move {
        let mut current = tx.borrow().clone();
        // A view published before we started counts as a change.
        views.mark_changed();
        'outer: loop {
            if views.changed().await.is_err() {
                break;
            }
            let mut view = views.borrow_and_update().clone();
            if !view.is_ready() {
                continue;
            }
            let started = Instant::now();
            let mut fast = endpoint_only(&current, &view);
            // The first snapshot is not delayed: proxies are waiting for it.
            if current.is_ready() {
                loop {
                    let quiet = if fast {
                        debounce.endpoints
                    } else {
                        debounce.config
                    };
                    let wake = (Instant::now() + quiet).min(started + debounce.max_delay);
                    tokio::select! {
                        changed = views.changed() => {
                            if changed.is_err() {
                                break 'outer;
                            }
                            view = views.borrow_and_update().clone();
                            fast = fast && endpoint_only(&current, &view);
                        }
                        () = tokio::time::sleep_until(wake) => break,
                    }
                }
            }
            let translate_started = Instant::now();
            let mut next = current.next(view);
            next.first_change = Some(started);
            next.push = Some(crate::snapshot::PushTimes {
                first_change: started,
                translate_started,
                published: Instant::now(),
                endpoints_only: fast,
            });
            let next = Arc::new(next);
            Metrics::add(&metrics.snapshots_total, 1);
            Metrics::add(&metrics.resources_encoded_total, next.encoded as u64);
            if fast {
                Metrics::add(&metrics.endpoint_only_snapshots_total, 1);
            }
            metrics.push_latency.observe(started.elapsed());
            debug!(
                generation = next.generation,
                view = next.view_generation,
                encoded = next.encoded,
                fast,
                waited_ms = started.elapsed().as_millis() as u64,
                "snapshot published"
            );
            record_push(&metrics, &next, fast, started.elapsed());
            current = next.clone();
            tx.send_replace(next);
        }
    };
    (rx, task)
}

/// The push in the journal: what changed, how much was encoded, how long
/// after the first change, how many connections it goes to.
fn record_push(metrics: &Metrics, next: &Snapshot, fast: bool, waited: std::time::Duration) {
    use crate::resource::ResourceType;
    let changed = |kind: ResourceType| next.resources(kind).changed.len();
    let (c, e, l, r) = (
        changed(ResourceType::Cluster),
        changed(ResourceType::Endpoint),
        changed(ResourceType::Listener),
        changed(ResourceType::Route),
    );
    metrics.journal.record(
        sextant_core::journal::Kind::Push,
        format!("snapshot {}", next.generation),
        format!(
            "{}: {} resources changed ({c} clusters, {e} assignments, {l} listeners, {r} route configurations), {} encoded, {} ms after the first change; {} connections",
            if fast { "endpoints only" } else { "configuration" },
            c + e + l + r,
            next.encoded,
            waited.as_millis(),
            Metrics::get(&metrics.connections_active),
        ),
    );
}
