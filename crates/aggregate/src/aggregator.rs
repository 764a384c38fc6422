//! The aggregator task: drives every registry's stream into the merge, and
//! owns readiness, staleness and status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::FutureExt;
use futures::stream::{BoxStream, StreamExt};
use sextant_core::journal::{Journal, Kind};
use sextant_core::{Event, MeshView, Registry, RegistryId, Rule, RuleSource};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_stream::StreamMap;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::merge::{MergeMode, MergeState};
use crate::status::{AggregateStatus, ErrorRecord, RegistryStatus, SourceKind, SyncState};

/// Tuning of the aggregator. The binary maps its flags onto this.
#[derive(Clone, Debug)]
pub struct AggregatorConfig {
    /// How registries that report the same hostname combine.
    pub merge: MergeMode,
    /// How long to wait for every registry's first full read before serving
    /// what is known. Default 30 s: long enough for a slow first list of a
    /// large cluster, short enough that one broken registry does not keep
    /// every proxy unconfigured (Envoy's own initial fetch timeout is 15 s,
    /// after which it retries).
    pub startup_timeout: Duration,
    /// Drop a registry's contribution after it has been stale this long.
    /// Default none: a registry outage never removes endpoints by itself,
    /// since serving slightly old endpoints beats serving none (istio#45992).
    pub max_stale: Option<Duration>,
    /// Events applied before a view is published, at most. Default 10,000:
    /// a burst (a deploy, a re-list) becomes one publication, while a steady
    /// trickle is still published event by event.
    pub max_batch: usize,
    /// Where registry state changes and new conflicts are recorded
    /// (`/debug/events`); default: a journal of its own.
    pub journal: Arc<Journal>,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            merge: MergeMode::Union,
            startup_timeout: Duration::from_secs(30),
            max_stale: None,
            max_batch: 10_000,
            journal: Arc::default(),
        }
    }
}

/// At most this many rejected objects are kept per registry.
const MAX_PROBLEMS: usize = 256;

/// What a source's stream carries: services from a registry, rules from a
/// rule source.
enum Update {
    Services(Event),
    Rules(Event<Rule>),
}

type Item = Option<sextant_core::Result<Update>>;

enum Control {
    Add(Arc<dyn Registry>, oneshot::Sender<Result<()>>),
    Remove(RegistryId, oneshot::Sender<bool>),
}

struct Tracked {
    id: RegistryId,
    kind: SourceKind,
    key: u64,
    state: SyncState,
    synced_once: bool,
    last_sync: Option<SystemTime>,
    stale_since: Option<(Instant, SystemTime)>,
    last_error: Option<ErrorRecord>,
    problems: BTreeMap<String, ErrorRecord>,
    events_total: u64,
    errors_total: u64,
    rejected_total: u64,
}

/// Merges registries into one [`MeshView`]; run it with [`Aggregator::run`].
pub struct Aggregator {
    config: AggregatorConfig,
    merge: MergeState,
    tracked: Vec<Tracked>,
    streams: StreamMap<u64, BoxStream<'static, Item>>,
    next_key: u64,
    view_tx: watch::Sender<Arc<MeshView>>,
    status_tx: watch::Sender<Arc<AggregateStatus>>,
    control_rx: mpsc::UnboundedReceiver<Control>,
    ready: bool,
    missing_at_startup: Vec<RegistryId>,
}

/// Talks to a running aggregator. Clones are cheap and equivalent.
#[derive(Clone)]
pub struct AggregatorHandle {
    view: watch::Receiver<Arc<MeshView>>,
    status: watch::Receiver<Arc<AggregateStatus>>,
    control: mpsc::UnboundedSender<Control>,
}

impl Aggregator {
    /// An aggregator over `registries`, in priority order (the first one's
    /// port definitions win). Fails if two registries share an id.
    pub fn new(
        config: AggregatorConfig,
        registries: Vec<Arc<dyn Registry>>,
    ) -> Result<(Aggregator, AggregatorHandle)> {
        Aggregator::with_rules(config, registries, Vec::new())
    }

    /// An aggregator over `registries` and the rule sources `rules`, each
    /// in priority order. Rule sources count for readiness and staleness
    /// as registries do. Fails if two registries, or two rule sources,
    /// share an id (a registry and a rule source may: one adapter, both
    /// streams).
    pub fn with_rules(
        config: AggregatorConfig,
        registries: Vec<Arc<dyn Registry>>,
        rules: Vec<Arc<dyn RuleSource>>,
    ) -> Result<(Aggregator, AggregatorHandle)> {
        let (view_tx, view_rx) = watch::channel(Arc::new(MeshView::default()));
        let (status_tx, status_rx) = watch::channel(Arc::new(AggregateStatus::default()));
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let mut agg = Aggregator {
            merge: MergeState::new(config.merge),
            config,
            tracked: Vec::new(),
            streams: StreamMap::new(),
            next_key: 0,
            view_tx,
            status_tx,
            control_rx,
            ready: false,
            missing_at_startup: Vec::new(),
        };
        for registry in registries {
            agg.add(registry)?;
        }
        for source in rules {
            agg.add_rules(source)?;
        }
        agg.publish_status();
        let handle = AggregatorHandle {
            view: view_rx,
            status: status_rx,
            control: control_tx,
        };
        Ok((agg, handle))
    }

    fn add(&mut self, registry: Arc<dyn Registry>) -> Result<()> {
        let id = registry.id().clone();
        if !self.merge.add_shard(id.clone()) {
            return Err(Error::DuplicateRegistry(id));
        }
        let stream = registry.watch().map(|item| item.map(Update::Services));
        self.track(id, SourceKind::Services, stream.boxed());
        Ok(())
    }

    fn add_rules(&mut self, source: Arc<dyn RuleSource>) -> Result<()> {
        let id = source.id().clone();
        if !self.merge.add_rule_shard(id.clone()) {
            return Err(Error::DuplicateRegistry(id));
        }
        let stream = source.watch_rules().map(|item| item.map(Update::Rules));
        self.track(id, SourceKind::Rules, stream.boxed());
        Ok(())
    }

    /// Starts following one source's stream.
    fn track(
        &mut self,
        id: RegistryId,
        kind: SourceKind,
        stream: BoxStream<'static, sextant_core::Result<Update>>,
    ) {
        let key = self.next_key;
        self.next_key += 1;
        // A `None` after the last item tells us the stream ended.
        let stream = stream
            .map(Some)
            .chain(futures::stream::once(async { None }));
        self.streams.insert(key, stream.boxed());
        self.tracked.push(Tracked {
            id,
            kind,
            key,
            state: SyncState::Syncing,
            synced_once: false,
            last_sync: None,
            stale_since: None,
            last_error: None,
            problems: BTreeMap::new(),
            events_total: 0,
            errors_total: 0,
            rejected_total: 0,
        });
    }

    /// Runs until every [`AggregatorHandle`] and view receiver is dropped.
    pub async fn run(mut self) {
        let startup_deadline = Instant::now() + self.config.startup_timeout;
        let mut control_open = true;
        self.on_timers(startup_deadline);
        self.publish();
        loop {
            let deadline = self.next_deadline(startup_deadline);
            tokio::select! {
                item = self.streams.next(), if !self.streams.is_empty() => {
                    if let Some((key, item)) = item {
                        self.handle(key, item);
                        // Take what else is already waiting: one publication per burst.
                        let mut n = 1;
                        while n < self.config.max_batch {
                            // Outside tokio's co-op budget, which would otherwise cut the
                            // burst into slices of 128; the loop is bounded by max_batch.
                            match tokio::task::unconstrained(self.streams.next()).now_or_never() {
                                Some(Some((key, item))) => self.handle(key, item),
                                _ => break,
                            }
                            n += 1;
                        }
                    }
                }
                cmd = self.control_rx.recv(), if control_open => match cmd {
                    Some(cmd) => self.control(cmd),
                    None => control_open = false,
                },
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {}
                () = self.view_tx.closed() => break,
            }
            self.on_timers(startup_deadline);
            self.publish();
        }
    }

    fn control(&mut self, cmd: Control) {
        match cmd {
            Control::Add(registry, reply) => {
                let result = self.add(registry);
                if result.is_ok() {
                    self.publish_status();
                }
                let _ = reply.send(result);
            }
            Control::Remove(id, reply) => {
                let found = if let Some(i) = self
                    .tracked
                    .iter()
                    .position(|t| t.id == id && t.kind == SourceKind::Services)
                {
                    let t = self.tracked.remove(i);
                    self.streams.remove(&t.key);
                    self.merge.remove_shard(&id);
                    info!(registry = %id, "registry removed");
                    true
                } else {
                    false
                };
                let _ = reply.send(found);
            }
        }
    }

    fn handle(&mut self, key: u64, item: Item) {
        let Some(t) = self.tracked.iter_mut().find(|t| t.key == key) else {
            return;
        };
        let now = SystemTime::now();
        match item {
            None => {
                let message =
                    "registry event stream ended; serving its last-known-good state".to_owned();
                warn!(registry = %t.id, "registry event stream ended");
                t.errors_total += 1;
                if mark_stale(t, now) {
                    self.config
                        .journal
                        .record(Kind::RegistryStale, subject(t), message.as_str());
                }
                t.last_error = Some(ErrorRecord {
                    object: None,
                    message,
                    at: now,
                });
            }
            Some(Ok(update)) => {
                t.events_total += 1;
                let is_reset = matches!(
                    update,
                    Update::Services(Event::Reset(_)) | Update::Rules(Event::Reset(_))
                );
                if is_reset {
                    let journal = &self.config.journal;
                    match t.state {
                        SyncState::Syncing => {
                            info!(registry = %t.id, "registry synced");
                            journal.record(Kind::RegistrySynced, subject(t), "first full read");
                        }
                        SyncState::Stale | SyncState::Dropped => {
                            info!(registry = %t.id, "registry recovered");
                            journal.record(
                                Kind::RegistryRecovered,
                                subject(t),
                                "read in full again",
                            );
                        }
                        SyncState::Synced => {}
                    }
                    t.state = SyncState::Synced;
                    t.synced_once = true;
                    t.last_sync = Some(now);
                    t.stale_since = None;
                    t.problems.clear();
                } else if t.state == SyncState::Dropped || !t.synced_once {
                    // A dropped shard comes back whole with a Reset, never piecemeal;
                    // changes before the first Reset have nothing to apply to.
                    return;
                } else if matches!(
                    update,
                    Update::Services(Event::Unchanged) | Update::Rules(Event::Unchanged)
                ) {
                    // Read in full, nothing changed: what the shard holds is
                    // current. Its problems stay (they were not fixed).
                    if t.state == SyncState::Stale {
                        info!(registry = %t.id, "registry recovered");
                        self.config.journal.record(
                            Kind::RegistryRecovered,
                            subject(t),
                            "answered again; nothing changed meanwhile",
                        );
                    }
                    t.state = SyncState::Synced;
                    t.last_sync = Some(now);
                    t.stale_since = None;
                    return;
                }
                // The item an Apply or Delete is about: a rejection of it
                // is over once it arrives valid or leaves.
                let item = match &update {
                    Update::Services(Event::Apply(s)) => Some(s.hostname.to_string()),
                    Update::Services(Event::Delete(h)) => Some(h.to_string()),
                    Update::Rules(Event::Apply(r)) => Some(r.key.to_string()),
                    Update::Rules(Event::Delete(k)) => Some(k.to_string()),
                    _ => None,
                };
                let rejected: Vec<(Option<String>, String)> = match update {
                    Update::Services(Event::Resolved(object))
                    | Update::Rules(Event::Resolved(object)) => {
                        resolve_problem(t, &object);
                        return;
                    }
                    Update::Services(event) => self
                        .merge
                        .apply(&t.id, event)
                        .into_iter()
                        .map(|r| (r.0.first().map(|e| e.service.to_string()), r.to_string()))
                        .collect(),
                    Update::Rules(event) => self
                        .merge
                        .apply_rules(&t.id, event)
                        .into_iter()
                        .map(|r| (r.0.first().map(|e| e.rule.to_string()), r.to_string()))
                        .collect(),
                };
                if let Some(item) = item
                    && !rejected.iter().any(|(o, _)| o.as_deref() == Some(&item))
                {
                    resolve_problem(t, &item);
                }
                for (object, message) in rejected {
                    t.rejected_total += 1;
                    record_problem(t, object, message, now);
                }
            }
            Some(Err(error)) => {
                t.errors_total += 1;
                let message = error.chain();
                if error.makes_stale() {
                    if t.state == SyncState::Synced {
                        warn!(registry = %t.id, error = %message, "registry unavailable; serving its last-known-good state");
                    }
                    if mark_stale(t, now) {
                        self.config.journal.record(
                            Kind::RegistryStale,
                            subject(t),
                            format!("{message}; serving its last good state"),
                        );
                    }
                    t.last_error = Some(ErrorRecord {
                        object: None,
                        message,
                        at: now,
                    });
                } else {
                    record_problem(t, error.object().map(str::to_owned), message, now);
                }
            }
        }
    }

    fn on_timers(&mut self, startup_deadline: Instant) {
        let now = Instant::now();
        if !self.ready {
            if self.tracked.iter().all(|t| t.synced_once) {
                self.ready = true;
                info!(
                    registries = self.tracked.len(),
                    "every registry synced; serving"
                );
            } else if now >= startup_deadline {
                self.ready = true;
                self.missing_at_startup = self
                    .tracked
                    .iter()
                    .filter(|t| !t.synced_once)
                    .map(|t| t.id.clone())
                    .collect();
                let missing: Vec<&str> =
                    self.missing_at_startup.iter().map(|r| r.as_str()).collect();
                warn!(missing = ?missing, "start-up timeout passed; serving without these registries");
            }
        }
        if let Some(max) = self.config.max_stale {
            for t in &mut self.tracked {
                if let (SyncState::Stale, Some((since, _))) = (t.state, t.stale_since)
                    && now >= since + max
                {
                    warn!(registry = %t.id, max_stale_s = max.as_secs_f64(), "registry stale for too long; dropping its contribution");
                    self.config.journal.record(
                        Kind::RegistryDropped,
                        subject(t),
                        format!(
                            "stale for longer than {} s: its services and rules are no longer served",
                            max.as_secs_f64()
                        ),
                    );
                    t.state = SyncState::Dropped;
                    self.merge.clear_shard(&t.id);
                }
            }
        }
    }

    fn next_deadline(&self, startup_deadline: Instant) -> Option<Instant> {
        let startup = (!self.ready).then_some(startup_deadline);
        let stale = self.config.max_stale.and_then(|max| {
            self.tracked
                .iter()
                .filter(|t| t.state == SyncState::Stale)
                .filter_map(|t| t.stale_since.map(|(since, _)| since + max))
                .min()
        });
        match (startup, stale) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn publish(&mut self) {
        if self.ready {
            let first = !self.view_tx.borrow().is_ready();
            if let Some(view) = self.merge.build_view(first) {
                let before = self.view_tx.borrow().conflicts.clone();
                for c in view.conflicts.iter().filter(|c| !before.contains(c)) {
                    self.config.journal.record(
                        Kind::Conflict,
                        c.hostname.as_str(),
                        format!(
                            "{}: {} is served, {} disagrees: {}",
                            c.field.as_str(),
                            c.winner,
                            c.other,
                            c.detail
                        ),
                    );
                }
                self.view_tx.send_replace(Arc::new(view));
            }
        }
        self.publish_status();
    }

    fn publish_status(&mut self) {
        let view = self.view_tx.borrow().clone();
        let registries = self
            .tracked
            .iter()
            .map(|t| {
                let ((services, endpoints), (routes, policies, scopes)) = match t.kind {
                    SourceKind::Services => (self.merge.shard_counts(&t.id), (0, 0, 0)),
                    SourceKind::Rules => ((0, 0), self.merge.rule_counts(&t.id)),
                };
                RegistryStatus {
                    id: t.id.clone(),
                    kind: t.kind,
                    state: t.state,
                    last_sync: t.last_sync,
                    stale_since: t.stale_since.map(|(_, at)| at),
                    services,
                    endpoints,
                    routes,
                    policies,
                    scopes,
                    last_error: t.last_error.clone(),
                    problems: t.problems.values().cloned().collect(),
                    events_total: t.events_total,
                    errors_total: t.errors_total,
                    rejected_total: t.rejected_total,
                }
            })
            .collect();
        self.status_tx.send_replace(Arc::new(AggregateStatus {
            ready: self.ready,
            missing_at_startup: self.missing_at_startup.clone(),
            generation: view.generation,
            services: view.services.len(),
            endpoints: view.endpoint_count(),
            conflicts: view.conflicts.len(),
            registries,
        }));
    }
}

/// How the journal names a tracked source: `ID (services)` or `ID (rules)`
/// (one adapter may be both, under one id).
fn subject(t: &Tracked) -> String {
    let kind = match t.kind {
        SourceKind::Services => "services",
        SourceKind::Rules => "rules",
    };
    format!("{} ({kind})", t.id)
}

/// Marks a synced registry stale; true when it was synced until now.
fn mark_stale(t: &mut Tracked, now: SystemTime) -> bool {
    if t.state == SyncState::Synced {
        t.state = SyncState::Stale;
        t.stale_since = Some((Instant::now(), now));
        return true;
    }
    false
}

/// The problem keyed `object` is over (fixed or gone), if there was one.
fn resolve_problem(t: &mut Tracked, object: &str) {
    if t.problems.remove(object).is_some() {
        info!(registry = %t.id, object, "registry object readable again or gone; its problem is cleared");
    }
}

fn record_problem(t: &mut Tracked, object: Option<String>, message: String, at: SystemTime) {
    let key = object.clone().unwrap_or_default();
    let is_new = t.problems.get(&key).is_none_or(|p| p.message != message);
    if is_new {
        warn!(registry = %t.id, object = %key, error = %message, "registry object rejected");
    }
    if t.problems.len() >= MAX_PROBLEMS && !t.problems.contains_key(&key) {
        t.problems.pop_first();
    }
    let record = ErrorRecord {
        object,
        message,
        at,
    };
    t.last_error = Some(record.clone());
    t.problems.insert(key, record);
}

impl AggregatorHandle {
    /// The merged view; generation 0 (not ready) until the aggregator is ready.
    pub fn view(&self) -> watch::Receiver<Arc<MeshView>> {
        self.view.clone()
    }

    /// The status of every registry, updated as events arrive.
    pub fn status(&self) -> watch::Receiver<Arc<AggregateStatus>> {
        self.status.clone()
    }

    /// Waits until the first view is published and returns it.
    pub async fn ready(&self) -> Result<Arc<MeshView>> {
        let mut rx = self.view.clone();
        let view = rx
            .wait_for(|v| v.is_ready())
            .await
            .map_err(|_| Error::Stopped)?;
        Ok(view.clone())
    }

    /// Adds a registry at the lowest priority while running.
    pub async fn add_registry(&self, registry: Arc<dyn Registry>) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Control::Add(registry, tx))
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Removes a registry and exactly its contribution. False if unknown.
    pub async fn remove_registry(&self, id: &RegistryId) -> Result<bool> {
        let (tx, rx) = oneshot::channel();
        self.control
            .send(Control::Remove(id.clone(), tx))
            .map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)
    }
}

#[cfg(test)]
mod tests;
