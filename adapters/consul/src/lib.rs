//! A registry read from Consul's catalog and health endpoints with blocking
//! queries. See [`convert`] for how instances become endpoints.
//!
//! How it follows Consul (learning from Istio's removed adapter, which
//! blocked only on the service list, re-listed everything on any change and
//! ignored health):
//! - One blocking query on `/v1/catalog/services` for the set of services,
//!   and one per service on `/v1/health/service/NAME` for its instances and
//!   their checks. A change to one service costs one query for that service.
//! - Consul's rules for blocking queries: `index` and `wait`, the index from
//!   `X-Consul-Index`; an index that goes backwards starts again from 0; an
//!   index of 0 is taken as 1; identical queries are at least
//!   `min_interval` apart, so a flapping service cannot spin a CPU.
//! - The first full read (catalog, then every service) is one `Reset`.
//!   Any failure (unreachable agent, 5xx, 403, malformed JSON) ends the
//!   session: the registry is marked stale, keeps serving its last-known-good
//!   services, and reconnects with jittered backoff ([`sextant_core::recover`]).
//! - A service that leaves the catalog leaves the view.
//! - Config entries: the services side also follows `service-defaults`
//!   (a service's protocol) and `service-resolver` (subset filters that
//!   are not plain label selectors are evaluated on each instance, see
//!   [`filter`]) with blocking queries; a change converts the services it
//!   touches again. The rules side ([`RuleSource`]) follows routers,
//!   splitters and resolvers.
//!
//! Built on `reqwest` with rustls (ring): no Consul crate covered health,
//! weights, meta and blocking queries together.

#![forbid(unsafe_code)]

pub mod convert;
pub mod entries;
pub mod filter;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use sextant_core::recover::{Backoff, EventSender, resilient_task};
use sextant_core::{Error, Event, EventStream, Registry, RegistryId, Rule, RuleSource, RuleStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::info;

use convert::{Mapping, ServiceEntry};

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
        }
    }
}

/// A registry over Consul.
pub struct ConsulRegistry {
    id: RegistryId,
    config: ConsulConfig,
}

impl ConsulRegistry {
    /// A registry with id `id` (conventionally `consul/DATACENTER`).
    pub fn new(id: impl Into<RegistryId>, config: ConsulConfig) -> Self {
        ConsulRegistry {
            id: id.into(),
            config,
        }
    }
}

impl Registry for ConsulRegistry {
    fn id(&self) -> &RegistryId {
        &self.id
    }

    fn watch(&self) -> EventStream {
        let config = self.config.clone();
        resilient_task(self.config.backoff.clone(), move |tx| {
            let config = config.clone();
            async move { session(&config, &tx).await }
        })
    }
}

/// Rules from Consul's L7 config entries: `service-router`,
/// `service-splitter` and `service-resolver`, each kind followed with a
/// blocking query on `/v1/config/KIND` (the same index rules as the
/// catalog). Whenever one changes, every service's rules are converted
/// again ([`entries::convert`]) and sent whole: a `Reset`, then what could
/// not be served, each as a problem naming the entry.
impl RuleSource for ConsulRegistry {
    fn id(&self) -> &RegistryId {
        &self.id
    }

    fn watch_rules(&self) -> RuleStream {
        let config = self.config.clone();
        resilient_task(self.config.backoff.clone(), move |tx: EventSender<Rule>| {
            let config = config.clone();
            async move { rules_session(&config, &tx).await }
        })
    }
}

/// Rules, and the problems to report with them (object, reason).
type RulesRead = (Vec<Rule>, Vec<(String, String)>);

/// The config entry kinds read as rules.
const RULE_KINDS: [&str; 3] = ["service-router", "service-splitter", "service-resolver"];

/// Every service's rules from the entries of each kind (in
/// [`RULE_KINDS`] order), and the problems: entries that do not decode,
/// and what of them cannot be served.
fn rules_from(mapping: &convert::Mapping, kinds: &[Vec<serde_json::Value>; 3]) -> RulesRead {
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
        by_name(RULE_KINDS[0], &kinds[0], &mut problems);
    let splitters: BTreeMap<String, entries::Splitter> =
        by_name(RULE_KINDS[1], &kinds[1], &mut problems);
    let resolvers: BTreeMap<String, entries::Resolver> =
        by_name(RULE_KINDS[2], &kinds[2], &mut problems);
    let names: BTreeSet<&String> = routers
        .keys()
        .chain(splitters.keys())
        .chain(resolvers.keys())
        .collect();
    let mut rules = Vec::new();
    for name in names {
        match entries::convert(
            mapping,
            name,
            routers.get(name),
            splitters.get(name),
            resolvers.get(name),
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

/// One connection of the rules stream: read every kind, then follow each
/// with blocking queries; any change sends the whole set again.
async fn rules_session(config: &ConsulConfig, tx: &EventSender<Rule>) -> Result<(), Error> {
    let api = Api::new(config)?;
    let mut kinds: [Vec<serde_json::Value>; 3] = Default::default();
    let mut indexes = [0u64; 3];
    for (i, kind) in RULE_KINDS.iter().enumerate() {
        let (list, index) = api.get(&["v1", "config", kind], 0).await?;
        kinds[i] = list;
        indexes[i] = next_index(0, index);
    }
    let mut last: Option<RulesRead> = None;
    loop {
        let now = rules_from(&config.mapping, &kinds);
        if last.as_ref() != Some(&now) {
            info!(
                rules = now.0.len(),
                problems = now.1.len(),
                "consul config entries read"
            );
            if tx.reset(now.0.clone()).await.is_err() {
                return Ok(());
            }
            for (object, reason) in &now.1 {
                if tx.invalid(object.clone(), reason.clone()).await.is_err() {
                    return Ok(());
                }
            }
            last = Some(now);
        }
        // Wait for the first kind to change.
        let started = Instant::now();
        let queries = RULE_KINDS.iter().enumerate().map(|(i, kind)| {
            let api = api.clone();
            let index = indexes[i];
            Box::pin(async move {
                let r: Result<(Vec<serde_json::Value>, u64), Error> =
                    api.get(&["v1", "config", kind], index).await;
                (i, r)
            })
        });
        let ((i, result), _, _) = futures::future::select_all(queries).await;
        let (list, returned) = result?;
        let next = next_index(indexes[i], returned);
        if next == indexes[i] {
            // The wait ran out: nothing changed.
            continue;
        }
        pace(started, config.min_interval).await;
        kinds[i] = list;
        indexes[i] = next;
    }
}

/// The largest Consul answer read. A service with 10,000 instances and
/// their checks is about 20 MB of JSON; a larger answer ends the session
/// (the last good state keeps serving) and says why.
pub const MAX_RESPONSE_BYTES: usize = 128 << 20;

/// The next index to ask with, by Consul's rules.
pub fn next_index(previous: u64, returned: u64) -> u64 {
    if returned == 0 {
        1
    } else if returned < previous {
        0
    } else {
        returned
    }
}

#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    config: ConsulConfig,
}

impl Api {
    fn new(config: &ConsulConfig) -> Result<Api, Error> {
        // The request timeout must outlast a blocking query's wait plus
        // Consul's jitter (wait/16).
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(config.wait + config.wait / 16 + Duration::from_secs(10));
        if let Some(ca) = &config.ca {
            let pem = std::fs::read(ca)
                .map_err(|e| Error::unavailable_from(format!("cannot read {}", ca.display()), e))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| Error::unavailable_from("bad Consul CA", e))?;
            b = b.add_root_certificate(cert);
        }
        if let Some((cert, key)) = &config.client_cert {
            let mut pem = std::fs::read(cert).map_err(|e| {
                Error::unavailable_from(format!("cannot read {}", cert.display()), e)
            })?;
            pem.extend(std::fs::read(key).map_err(|e| {
                Error::unavailable_from(format!("cannot read {}", key.display()), e)
            })?);
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| Error::unavailable_from("bad Consul client certificate", e))?;
            b = b.identity(id);
        }
        let http = b
            .build()
            .map_err(|e| Error::unavailable_from("cannot build the HTTP client", e))?;
        Ok(Api {
            http,
            config: config.clone(),
        })
    }

    /// A (blocking, if `index` > 0) GET; the body and `X-Consul-Index`.
    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &[&str],
        index: u64,
    ) -> Result<(T, u64), Error> {
        match self.get_bounded(path, index).await? {
            (Ok(t), index) => Ok((t, index)),
            (Err(oversized), _) => Err(Error::unavailable(oversized)),
        }
    }

    /// As [`Api::get`], with an answer over the size limit given as its
    /// own error (and the index it carried), for the caller to skip that
    /// one object rather than the whole session.
    async fn get_bounded<T: serde::de::DeserializeOwned>(
        &self,
        path: &[&str],
        index: u64,
    ) -> Result<(Result<T, String>, u64), Error> {
        let mut url = reqwest::Url::parse(&self.config.addr).map_err(|e| {
            Error::unavailable_from(format!("bad Consul address {:?}", self.config.addr), e)
        })?;
        url.path_segments_mut()
            .map_err(|()| Error::unavailable(format!("bad Consul address {:?}", self.config.addr)))?
            .pop_if_empty()
            .extend(path);
        {
            let mut q = url.query_pairs_mut();
            if index > 0 {
                q.append_pair("index", &index.to_string());
                q.append_pair("wait", &format!("{}s", self.config.wait.as_secs().max(1)));
            }
            if let Some(dc) = &self.config.datacenter {
                q.append_pair("dc", dc);
            }
        }
        let what = format!("GET {}", url.path());
        let mut req = self.http.get(url);
        if let Some(token) = &self.config.token {
            req = req.header("X-Consul-Token", token.expose());
        }
        let resp = req.send().await.map_err(|e| {
            Error::unavailable_from(
                format!("cannot reach Consul at {} ({what})", self.config.addr),
                e,
            )
        })?;
        let status = resp.status();
        if status == reqwest::StatusCode::FORBIDDEN {
            let body = resp.text().await.unwrap_or_default();
            return Err(Error::unavailable(format!(
                "Consul refused the request ({what}: 403 {}): check --consul-token and that its ACL policy grants service:read and node:read",
                body.trim()
            )));
        }
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(Error::unavailable(format!(
                "Consul answered {status} to {what}: {}",
                body.trim()
            )));
        }
        let index = resp
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        // Read in chunks up to the limit: a faulty agent or proxy cannot
        // make the adapter buffer without bound.
        let mut resp = resp;
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| Error::unavailable_from(format!("{what}: reading the answer failed"), e))?
        {
            let limit = self.config.max_response_bytes;
            if body.len() + chunk.len() > limit {
                return Ok((
                    Err(format!(
                        "Consul's answer to {what} is over the limit of {limit} bytes"
                    )),
                    index,
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let value = serde_json::from_slice(&body).map_err(|e| {
            Error::unavailable_from(format!("Consul answered {what} with malformed JSON"), e)
        })?;
        Ok((Ok(value), index))
    }

    async fn services(&self, index: u64) -> Result<(BTreeSet<String>, u64), Error> {
        let (map, index): (BTreeMap<String, serde_json::Value>, u64) =
            self.get(&["v1", "catalog", "services"], index).await?;
        Ok((map.into_keys().collect(), index))
    }

    /// A service's instances; an answer over the size limit is that
    /// service's problem only (`Err` inside), not the session's.
    async fn health(
        &self,
        name: &str,
        index: u64,
    ) -> Result<(Result<Vec<ServiceEntry>, String>, u64), Error> {
        self.get_bounded(&["v1", "health", "service", name], index)
            .await
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

type Tx = EventSender;

/// Reports a service that could not be converted; it is skipped. The
/// receiver is gone only when the stream was dropped: nobody to tell.
async fn invalid(tx: &Tx, name: &str, reason: String) {
    let _ = tx
        .send(Err(Error::invalid_object(
            format!("consul service {name}"),
            reason,
        )))
        .await;
}

/// The config entry kinds the services side reads: what they add to a
/// service is in [`convert::Extras`].
const SERVICE_KINDS: [&str; 2] = ["service-defaults", "service-resolver"];

/// What the services' config entries add, by service name.
fn extras_from(kinds: &[Vec<serde_json::Value>; 2]) -> HashMap<String, convert::Extras> {
    let mut out: HashMap<String, convert::Extras> = HashMap::new();
    let name = |v: &serde_json::Value| {
        v.get("Name")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
    };
    for d in &kinds[0] {
        let protocol = d
            .get("Protocol")
            .and_then(serde_json::Value::as_str)
            .and_then(convert::defaults_protocol);
        if let (Some(n), Some(p)) = (name(d), protocol) {
            out.entry(n).or_default().protocol = Some(p);
        }
    }
    for r in &kinds[1] {
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

/// What one session knows: each service's instances as last read, and what
/// config entries add.
struct Known {
    entries: HashMap<String, Vec<ServiceEntry>>,
    extras: HashMap<String, convert::Extras>,
}

impl Known {
    /// The event for service `name` as it is now, reporting a service that
    /// cannot be converted.
    async fn event(&self, mapping: &Mapping, name: &str, tx: &Tx) -> Option<Event> {
        let entries = self.entries.get(name).map_or(&[][..], Vec::as_slice);
        let extras = self.extras.get(name).cloned().unwrap_or_default();
        match convert::to_service_with(name, entries, mapping, &extras) {
            Ok(Some(s)) => Some(Event::Apply(s)),
            Ok(None) => mapping.hostname(name).ok().map(Event::Delete),
            Err(reason) => {
                invalid(tx, name, reason).await;
                None
            }
        }
    }
}

/// One connection: a full read as one Reset, then follow changes.
async fn session(config: &ConsulConfig, tx: &Tx) -> Result<(), Error> {
    let api = Api::new(config)?;
    let (names, mut catalog_index) = api.services(0).await?;
    catalog_index = next_index(0, catalog_index);
    let mut kinds: [Vec<serde_json::Value>; 2] = Default::default();
    let mut kind_indexes = [0u64; 2];
    for (i, kind) in SERVICE_KINDS.iter().enumerate() {
        let (list, index) = api.get(&["v1", "config", kind], 0).await?;
        kinds[i] = list;
        kind_indexes[i] = next_index(0, index);
    }
    let mut known = Known {
        entries: HashMap::new(),
        extras: extras_from(&kinds),
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
    let mut watchers: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
    let mut tasks = JoinSet::new();
    let (updates_tx, mut updates) = mpsc::channel(256);
    for result in results {
        let (name, entries, index) = result?;
        match entries {
            Ok(entries) => {
                known.entries.insert(name.clone(), entries);
                if let Some(Event::Apply(s)) = known.event(&config.mapping, &name, tx).await {
                    services.push(s);
                }
            }
            // Skipped, as a malformed service is.
            Err(reason) => invalid(tx, &name, reason).await,
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
    if tx.reset(services).await.is_err() {
        return Ok(());
    }

    let mut catalog = Box::pin(api.services(catalog_index));
    let mut catalog_started = Instant::now();
    let config_query = |i: usize, index: u64| {
        let api = api.clone();
        Box::pin(async move {
            let started = Instant::now();
            let r: Result<(Vec<serde_json::Value>, u64), Error> =
                api.get(&["v1", "config", SERVICE_KINDS[i]], index).await;
            (r, started)
        })
    };
    let mut defaults = config_query(0, kind_indexes[0]);
    let mut resolvers = config_query(1, kind_indexes[1]);
    loop {
        let changed_kind = tokio::select! {
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
                    if let Ok(host) = config.mapping.hostname(&name)
                        && tx.delete(host).await.is_err()
                    {
                        return Ok(());
                    }
                }
                pace(catalog_started, config.min_interval).await;
                catalog_index = next;
                catalog_started = Instant::now();
                catalog = Box::pin(api.services(catalog_index));
                None
            }
            update = updates.recv() => match update {
                Some(Update::Changed(name, entries)) => {
                    if !watchers.contains_key(&name) {
                        continue; // Left the catalog meanwhile.
                    }
                    known.entries.insert(name.clone(), entries);
                    if let Some(event) = known.event(&config.mapping, &name, tx).await
                        && tx.send(Ok(event)).await.is_err()
                    {
                        return Ok(());
                    }
                    None
                }
                Some(Update::Oversized(name, reason)) => {
                    // Reported; its last good instances stay served.
                    invalid(tx, &name, reason).await;
                    None
                }
                Some(Update::Failed(e)) => return Err(e),
                None => return Err(Error::unavailable("consul watchers stopped")),
            },
            (result, started) = &mut defaults => Some((0, result?, started)),
            (result, started) = &mut resolvers => Some((1, result?, started)),
        };
        let Some((i, (list, returned), started)) = changed_kind else {
            continue;
        };
        let next = next_index(kind_indexes[i], returned);
        let changed = next != kind_indexes[i];
        if changed {
            pace(started, config.min_interval).await;
            kind_indexes[i] = next;
            kinds[i] = list;
        }
        let query = config_query(i, kind_indexes[i]);
        if i == 0 {
            defaults = query;
        } else {
            resolvers = query;
        }
        if !changed {
            continue;
        }
        // Services whose extras changed are converted again.
        let extras = extras_from(&kinds);
        let touched: BTreeSet<String> = extras
            .keys()
            .chain(known.extras.keys())
            .filter(|n| extras.get(*n) != known.extras.get(*n))
            .cloned()
            .collect();
        known.extras = extras;
        for name in touched.iter().filter(|n| known.entries.contains_key(*n)) {
            if let Some(event) = known.event(&config.mapping, name, tx).await
                && tx.send(Ok(event)).await.is_err()
            {
                return Ok(());
            }
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
