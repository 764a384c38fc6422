//! The registry: its settings, its sessions and its face (what `lib.rs`
//! re-exports).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use sextant_core::recover::{Backoff, Closed, EventSender, resilient_task};
use sextant_core::{Error, Event, EventStream, Registry, RegistryId, Rule, RuleSource, RuleStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::api::{Api, ConfigEntries, ServiceEntry};
use crate::mapping::Mapping;
use crate::{MAX_RESPONSE_BYTES, convert, entries, next_index};

/// How to reach Consul and how to read it.
#[derive(Clone, Debug)]
pub struct ConsulConfig {
    /// Agent address, e.g. `http://127.0.0.1:8500` (`CONSUL_HTTP_ADDR`).
    pub addr: String,
    /// ACL token, sent as `X-Consul-Token`; never printed.
    pub token: Option<sextant_core::Secret>,
    /// Datacenter to read; default the agent's.
    pub datacenter: Option<String>,
    /// CA certificate (PEM) for an https agent.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM), for agents that verify clients.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// How instances become endpoints.
    pub mapping: Mapping,
    /// How long a blocking query waits. Default 5 minutes, Consul's own
    /// default; the agent answers sooner when something changes.
    pub wait: Duration,
    /// Least time between two identical queries. Default 250 ms.
    pub min_interval: Duration,
    /// Parallel queries during a full read. Default 16.
    pub concurrency: usize,
    /// Reconnect backoff.
    pub backoff: Backoff,
    /// The largest answer read. Default [`MAX_RESPONSE_BYTES`].
    pub max_response_bytes: usize,
    /// How often a config entry kind Consul does not serve (404 before
    /// Consul 1.5 or from a Consul-compatible registry, 403 for a token
    /// without the right to read it) is asked for again. Default 30 s.
    pub config_entries_retry: Duration,
}

impl Default for ConsulConfig {
    fn default() -> Self {
        ConsulConfig {
            addr: "http://127.0.0.1:8500".into(),
            token: None,
            datacenter: None,
            ca: None,
            client_cert: None,
            mapping: Mapping::default(),
            wait: Duration::from_secs(300),
            min_interval: Duration::from_millis(250),
            concurrency: 16,
            backoff: Backoff::default(),
            max_response_bytes: MAX_RESPONSE_BYTES,
            config_entries_retry: Duration::from_secs(30),
        }
    }
}

/// A registry over Consul.
pub struct ConsulRegistry {
    id: RegistryId,
    config: ConsulConfig,
    /// Config entry kinds Consul does not serve to us, logged once.
    not_served: Announced,
}

impl ConsulRegistry {
    /// A registry with id `id` (conventionally `consul/DATACENTER`).
    pub fn new(id: impl Into<RegistryId>, config: ConsulConfig) -> Self {
        ConsulRegistry {
            id: id.into(),
            config,
            not_served: Announced::default(),
        }
    }
}

impl Registry for ConsulRegistry {
    fn id(&self) -> &RegistryId {
        &self.id
    }

    fn watch(&self) -> EventStream {
        let config = self.config.clone();
        let not_served = self.not_served.clone();
        resilient_task(self.config.backoff.clone(), move |tx| {
            let (config, not_served) = (config.clone(), not_served.clone());
            async move {
                match session(&config, &tx, &not_served).await {
                    Err(Stop::Closed) => Ok(()),
                    Err(Stop::Failed(e)) => Err(e),
                    Ok(()) => Ok(()),
                }
            }
        })
    }
}

/// Rules from Consul's L7 config entries: `service-router`,
/// `service-splitter` and `service-resolver`, each kind followed with a
/// blocking query on `/v1/config/KIND` (the same index rules as the
/// catalog). Whenever one changes, every service's rules are converted
/// again ([`entries::convert`]); the first read is sent as a `Reset`, then
/// only what changed: the rules that differ (`Apply`, `Delete`), the
/// problems that are new and those that are over.
impl RuleSource for ConsulRegistry {
    fn id(&self) -> &RegistryId {
        &self.id
    }

    fn watch_rules(&self) -> RuleStream {
        let config = self.config.clone();
        let not_served = self.not_served.clone();
        resilient_task(self.config.backoff.clone(), move |tx: EventSender<Rule>| {
            let (config, not_served) = (config.clone(), not_served.clone());
            async move {
                match rules_session(&config, &tx, &not_served).await {
                    Err(Stop::Closed) => Ok(()),
                    Err(Stop::Failed(e)) => Err(e),
                    Ok(()) => Ok(()),
                }
            }
        })
    }
}

/// Why a session returns: the source failed, or nobody listens any more.
enum Stop {
    Failed(Error),
    Closed,
}

impl From<Error> for Stop {
    fn from(e: Error) -> Stop {
        Stop::Failed(e)
    }
}

impl From<Closed> for Stop {
    fn from(_: Closed) -> Stop {
        Stop::Closed
    }
}

/// The config entry kinds Consul does not serve to this registry, shared
/// by its two sessions and kept across reconnects, so each is logged once.
#[derive(Clone, Default)]
struct Announced(Arc<Mutex<BTreeSet<&'static str>>>);

impl Announced {
    fn not_served(&self, kind: &'static str, why: &str, retry: Duration) {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if known.insert(kind) {
            warn!(
                kind,
                why,
                "consul does not serve these config entries to us: going on without them, asking again every {retry:?}"
            );
        }
    }

    fn served(&self, kind: &'static str) {
        let mut known = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if known.remove(kind) {
            info!(kind, "consul serves these config entries now; reading them");
        }
    }
}

/// One config entry kind as a session follows it: what it holds, the
/// index to block on, and whether Consul serves it to us at all.
struct Followed {
    kind: &'static str,
    list: Vec<serde_json::Value>,
    index: u64,
    served: bool,
}

impl Followed {
    /// The first read of `kind`.
    async fn read(api: &Api, kind: &'static str, announced: &Announced) -> Result<Followed, Error> {
        let mut f = Followed {
            kind,
            list: Vec::new(),
            index: 0,
            served: true,
        };
        let read = api.config_entries(kind, 0).await?;
        f.update(read, announced, api.config.config_entries_retry);
        Ok(f)
    }

    /// The next answer about this kind: a blocking query from its index,
    /// or, for a kind Consul does not serve, a plain read after the retry
    /// delay. Also when it started, for pacing.
    fn next(&self, api: &Api) -> Pending {
        let (api, kind, index, served) = (api.clone(), self.kind, self.index, self.served);
        Box::pin(async move {
            if !served {
                tokio::time::sleep(api.config.config_entries_retry).await;
            }
            let started = Instant::now();
            let index = if served { index } else { 0 };
            (api.config_entries(kind, index).await, started)
        })
    }

    /// Takes an answer; true when what the kind holds changed.
    fn update(&mut self, read: ConfigEntries, announced: &Announced, retry: Duration) -> bool {
        match read {
            ConfigEntries::Read(list, returned) => {
                let next = next_index(self.index, returned);
                let changed = !self.served || next != self.index;
                if !self.served {
                    announced.served(self.kind);
                }
                self.served = true;
                if changed {
                    self.index = next;
                    self.list = list;
                }
                changed
            }
            ConfigEntries::NotServed(why) => {
                announced.not_served(self.kind, &why, retry);
                let changed = self.served && !self.list.is_empty();
                self.served = false;
                self.index = 0;
                self.list.clear();
                changed
            }
        }
    }
}

/// A query in flight: its answer, and when it started.
type Pending = Pin<Box<dyn Future<Output = (Result<ConfigEntries, Error>, Instant)> + Send>>;

/// Rules, and the problems to report with them (object, reason).
type RulesRead = (Vec<Rule>, Vec<(String, String)>);

/// The config entry kinds read as rules.
const RULE_KINDS: [&str; 3] = ["service-router", "service-splitter", "service-resolver"];

/// Every service's rules from the entries of each kind (in
/// [`RULE_KINDS`] order), and the problems: entries that do not decode,
/// and what of them cannot be served.
fn rules_from(mapping: &Mapping, kinds: [&[serde_json::Value]; 3]) -> RulesRead {
    fn by_name<T: serde::de::DeserializeOwned>(
        kind: &str,
        list: &[serde_json::Value],
        problems: &mut Vec<(String, String)>,
    ) -> BTreeMap<String, T> {
        let mut out = BTreeMap::new();
        for v in list {
            let name = v
                .get("Name")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("");
            match serde_json::from_value::<T>(v.clone()) {
                Ok(t) => {
                    out.insert(name.to_owned(), t);
                }
                Err(e) => problems.push((format!("{kind} {name}"), e.to_string())),
            }
        }
        out
    }
    let mut problems = Vec::new();
    let routers: BTreeMap<String, entries::Router> =
        by_name(RULE_KINDS[0], kinds[0], &mut problems);
    let splitters: BTreeMap<String, entries::Splitter> =
        by_name(RULE_KINDS[1], kinds[1], &mut problems);
    let resolvers: BTreeMap<String, entries::Resolver> =
        by_name(RULE_KINDS[2], kinds[2], &mut problems);
    let names: BTreeSet<&String> = routers
        .keys()
        .chain(splitters.keys())
        .chain(resolvers.keys())
        .collect();
    let mut rules = Vec::new();
    for name in names {
        let chain = entries::Chain {
            splitters: Some(&splitters),
            resolvers: Some(&resolvers),
        };
        match entries::convert(
            mapping,
            name,
            routers.get(name),
            splitters.get(name),
            resolvers.get(name),
            chain,
        ) {
            Ok(c) => {
                rules.extend(c.route);
                rules.extend(c.policy);
                problems.extend(c.unsupported.into_iter().map(|u| {
                    let object = u.split(':').next().unwrap_or(&u).to_owned();
                    (object, format!("not served: {u}"))
                }));
            }
            Err(e) => problems.push((format!("config entries of {name}"), e)),
        }
    }
    (rules, problems)
}

/// Sends what changed from `last` to `now`: everything as a `Reset` the
/// first time; then the rules that differ, the problems that are over and
/// those that are new.
async fn send_rules(
    tx: &EventSender<Rule>,
    last: Option<&RulesRead>,
    now: &RulesRead,
) -> Result<(), Closed> {
    let Some((last_rules, last_problems)) = last else {
        tx.reset(now.0.clone()).await?;
        return tx.problems_changed(&[], &now.1).await;
    };
    for event in sextant_core::changes(last_rules, &now.0) {
        tx.send(Ok(event)).await?;
    }
    tx.problems_changed(last_problems, &now.1).await
}

/// One connection of the rules stream: read every kind, then follow each
/// with blocking queries; a change sends what it changed.
async fn rules_session(
    config: &ConsulConfig,
    tx: &EventSender<Rule>,
    announced: &Announced,
) -> Result<(), Stop> {
    let api = Api::new(config)?;
    let mut kinds = Vec::with_capacity(RULE_KINDS.len());
    for kind in RULE_KINDS {
        kinds.push(Followed::read(&api, kind, announced).await?);
    }
    let mut last: Option<RulesRead> = None;
    // Each kind's query, tagged with its place in `kinds`.
    let tagged = |i: usize, q: Pending| async move { (i, q.await) };
    let mut queries = futures::stream::FuturesUnordered::new();
    for (i, k) in kinds.iter().enumerate() {
        queries.push(tagged(i, k.next(&api)));
    }
    loop {
        let now = rules_from(
            &config.mapping,
            [&kinds[0].list, &kinds[1].list, &kinds[2].list],
        );
        if last.as_ref() != Some(&now) {
            info!(
                rules = now.0.len(),
                problems = now.1.len(),
                "consul config entries read"
            );
            send_rules(tx, last.as_ref(), &now).await?;
            last = Some(now);
        }
        // Wait for the first kind to answer.
        let Some((i, (result, started))) = queries.next().await else {
            return Err(Error::unavailable("consul config entry queries stopped").into());
        };
        let changed = kinds[i].update(result?, announced, config.config_entries_retry);
        if changed && kinds[i].served {
            pace(started, config.min_interval).await;
        }
        queries.push(tagged(i, kinds[i].next(&api)));
    }
}

/// What a service watcher reports.
enum Update {
    Changed(String, Vec<ServiceEntry>),
    /// Its answer is over the size limit: skipped, reported, watched on.
    Oversized(String, String),
    Failed(Error),
}

/// Spaces identical queries at least `min` apart.
async fn pace(started: Instant, min: Duration) {
    let elapsed = started.elapsed();
    if elapsed < min {
        tokio::time::sleep(min - elapsed).await;
    }
}

/// Follows one service with blocking health queries, from `index`.
async fn watch_service(api: Api, name: String, mut index: u64, tx: mpsc::Sender<Update>) {
    loop {
        let started = Instant::now();
        match api.health(&name, index).await {
            Ok((Err(reason), returned)) => {
                let next = next_index(index, returned);
                if next != index
                    && tx
                        .send(Update::Oversized(name.clone(), reason))
                        .await
                        .is_err()
                {
                    return;
                }
                index = next;
            }
            Ok((Ok(entries), returned)) => {
                let next = next_index(index, returned);
                if (next != index || returned < index)
                    && tx
                        .send(Update::Changed(name.clone(), entries))
                        .await
                        .is_err()
                {
                    return;
                }
                index = next;
            }
            Err(e) => {
                let _ = tx.send(Update::Failed(e)).await;
                return;
            }
        }
        pace(started, api.config.min_interval).await;
    }
}

/// The config entry kinds the services side reads: what they add to a
/// service is in [`convert::Extras`].
const SERVICE_KINDS: [&str; 2] = ["service-defaults", "service-resolver"];

/// What the services' config entries add, by service name.
fn extras_from(
    defaults: &[serde_json::Value],
    resolvers: &[serde_json::Value],
) -> HashMap<String, convert::Extras> {
    let mut out: HashMap<String, convert::Extras> = HashMap::new();
    let name = |v: &serde_json::Value| {
        v.get("Name")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    for d in defaults {
        let protocol = d
            .get("Protocol")
            .and_then(serde_json::Value::as_str)
            .and_then(convert::defaults_protocol);
        if let (Some(n), Some(p)) = (name(d), protocol) {
            out.entry(n).or_default().protocol = Some(p);
        }
    }
    for r in resolvers {
        // A resolver that does not decode is reported by the rules side.
        let (Some(n), Ok(resolver)) = (
            name(r),
            serde_json::from_value::<entries::Resolver>(r.clone()),
        ) else {
            continue;
        };
        let subsets = entries::evaluated_subsets(&resolver);
        if !subsets.is_empty() {
            out.entry(n).or_default().subsets = subsets;
        }
    }
    out
}

/// What one session knows: each service's instances as last read, what
/// config entries add, and the services with a problem shown.
struct Known {
    entries: HashMap<String, Vec<ServiceEntry>>,
    extras: HashMap<String, convert::Extras>,
    broken: BTreeSet<String>,
}

/// How a service with a problem is named.
fn object(name: &str) -> String {
    format!("consul service {name}")
}

impl Known {
    /// Sends service `name` as it is now: an Apply, a Delete (no instances
    /// left), or a problem (it cannot be converted; its last good version
    /// stays). A problem it had is retracted once it converts again.
    async fn send(
        &mut self,
        mapping: &Mapping,
        name: &str,
        tx: &EventSender,
    ) -> Result<(), Closed> {
        let entries = self.entries.get(name).map_or(&[][..], Vec::as_slice);
        let extras = self.extras.get(name).cloned().unwrap_or_default();
        let event = match convert::to_service_with(name, entries, mapping, &extras) {
            Ok(Some(s)) => Event::Apply(s),
            Ok(None) => match mapping.hostname(name) {
                Ok(h) => Event::Delete(h),
                Err(_) => return Ok(()),
            },
            Err(reason) => return self.problem(name, reason, tx).await,
        };
        tx.send(Ok(event)).await?;
        self.fixed(name, tx).await
    }

    /// Service `name` is skipped: reported, and remembered until fixed.
    async fn problem(
        &mut self,
        name: &str,
        reason: String,
        tx: &EventSender,
    ) -> Result<(), Closed> {
        self.broken.insert(name.to_owned());
        tx.invalid(object(name), reason).await
    }

    /// Service `name` converts again, or is gone: its problem is over.
    async fn fixed(&mut self, name: &str, tx: &EventSender) -> Result<(), Closed> {
        if self.broken.remove(name) {
            tx.resolved(object(name)).await?;
        }
        Ok(())
    }
}

/// One connection: a full read as one Reset, then follow changes.
async fn session(
    config: &ConsulConfig,
    tx: &EventSender,
    announced: &Announced,
) -> Result<(), Stop> {
    let api = Api::new(config)?;
    let (names, mut catalog_index) = api.services(0).await?;
    catalog_index = next_index(0, catalog_index);
    let mut defaults = Followed::read(&api, SERVICE_KINDS[0], announced).await?;
    let mut resolvers = Followed::read(&api, SERVICE_KINDS[1], announced).await?;
    let mut known = Known {
        entries: HashMap::new(),
        extras: extras_from(&defaults.list, &resolvers.list),
        broken: BTreeSet::new(),
    };

    // Full read: every service once, a few at a time.
    let reads = futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let api = api.clone();
            async move {
                api.health(&name, 0)
                    .await
                    .map(|(entries, index)| (name, entries, index))
            }
        })
        .buffer_unordered(config.concurrency.max(1));
    let results: Vec<_> = reads.collect().await;
    let mut services = Vec::new();
    let mut problems = Vec::new();
    let mut watchers: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
    let mut tasks = JoinSet::new();
    let (updates_tx, mut updates) = mpsc::channel(256);
    for result in results {
        let (name, entries, index) = result?;
        match entries {
            Ok(entries) => {
                let extras = known.extras.get(&name).cloned().unwrap_or_default();
                match convert::to_service_with(&name, &entries, &config.mapping, &extras) {
                    Ok(Some(s)) => services.push(s),
                    Ok(None) => {}
                    Err(reason) => problems.push((name.clone(), reason)),
                }
                known.entries.insert(name.clone(), entries);
            }
            // Skipped, as a malformed service is.
            Err(reason) => problems.push((name.clone(), reason)),
        }
        let handle = tasks.spawn(watch_service(
            api.clone(),
            name.clone(),
            next_index(0, index),
            updates_tx.clone(),
        ));
        watchers.insert(name, handle);
    }
    info!(services = services.len(), catalog_index, "consul read");
    tx.reset(services).await?;
    for (name, reason) in problems {
        known.problem(&name, reason, tx).await?;
    }

    let mut catalog = Box::pin(api.services(catalog_index));
    let mut catalog_started = Instant::now();
    let mut defaults_next = defaults.next(&api);
    let mut resolvers_next = resolvers.next(&api);
    loop {
        let extras_changed = tokio::select! {
            result = &mut catalog => {
                let (names, returned) = result?;
                let next = next_index(catalog_index, returned);
                for name in &names {
                    if !watchers.contains_key(name) {
                        // Index 0: the first answer comes at once.
                        let handle = tasks.spawn(watch_service(api.clone(), name.clone(), 0, updates_tx.clone()));
                        watchers.insert(name.clone(), handle);
                    }
                }
                let gone: Vec<String> = watchers.keys().filter(|n| !names.contains(*n)).cloned().collect();
                for name in gone {
                    if let Some(h) = watchers.remove(&name) {
                        h.abort();
                    }
                    known.entries.remove(&name);
                    if let Ok(host) = config.mapping.hostname(&name) {
                        tx.delete(host).await?;
                    }
                    known.fixed(&name, tx).await?;
                }
                pace(catalog_started, config.min_interval).await;
                catalog_index = next;
                catalog_started = Instant::now();
                catalog = Box::pin(api.services(catalog_index));
                false
            }
            update = updates.recv() => match update {
                Some(Update::Changed(name, entries)) => {
                    if !watchers.contains_key(&name) {
                        continue; // Left the catalog meanwhile.
                    }
                    known.entries.insert(name.clone(), entries);
                    known.send(&config.mapping, &name, tx).await?;
                    false
                }
                Some(Update::Oversized(name, reason)) => {
                    // Reported; its last good instances stay served.
                    known.problem(&name, reason, tx).await?;
                    false
                }
                Some(Update::Failed(e)) => return Err(e.into()),
                None => return Err(Error::unavailable("consul watchers stopped").into()),
            },
            (result, started) = &mut defaults_next => {
                let changed = defaults.update(result?, announced, config.config_entries_retry);
                if changed && defaults.served {
                    pace(started, config.min_interval).await;
                }
                defaults_next = defaults.next(&api);
                changed
            }
            (result, started) = &mut resolvers_next => {
                let changed = resolvers.update(result?, announced, config.config_entries_retry);
                if changed && resolvers.served {
                    pace(started, config.min_interval).await;
                }
                resolvers_next = resolvers.next(&api);
                changed
            }
        };
        if !extras_changed {
            continue;
        }
        // Services whose extras changed are converted again.
        let extras = extras_from(&defaults.list, &resolvers.list);
        let touched: BTreeSet<String> = extras
            .keys()
            .chain(known.extras.keys())
            .filter(|n| extras.get(*n) != known.extras.get(*n))
            .cloned()
            .collect();
        known.extras = extras;
        let touched: Vec<String> = touched
            .into_iter()
            .filter(|n| known.entries.contains_key(n))
            .collect();
        for name in &touched {
            known.send(&config.mapping, name, tx).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::next_index;

    #[test]
    fn index_rules() {
        assert_eq!(next_index(0, 0), 1, "0 is taken as 1");
        assert_eq!(next_index(10, 12), 12);
        assert_eq!(next_index(10, 10), 10, "a timeout keeps the index");
        assert_eq!(next_index(10, 3), 0, "backwards: start again");
    }
}
