//! A registry read from etcd: service documents, endpoint documents
//! (usually written with a lease, so a crashed instance disappears), and
//! grpc-go's etcd naming convention. See [`convert`] for the key layout.
//!
//! How it follows etcd:
//! - A full read of both prefixes at one revision, then a watch from the
//!   next revision: no event is lost between the two.
//! - After a connection loss, the next session resumes the watch from the
//!   last revision seen: nothing is read again, and the current state is
//!   re-announced as one `Reset` (which also clears staleness). If that
//!   revision was compacted meanwhile, everything is read again and
//!   delivered as one `Reset`: never an empty view in between.
//! - All events of one watch response are applied together and each
//!   touched service is sent once: a deploy that rewrites 1,000 endpoint
//!   keys becomes a handful of events, not 1,000.
//! - A malformed key or value is skipped and reported with its key
//!   (`etcd key KEY`); the key's last good value, if any, stays. Once the
//!   key is written well again or deleted, its problem alone is retracted.
//! - Reconnects use the shared jittered backoff ([`sextant_core::recover`]).

#![forbid(unsafe_code)]

pub mod client;
pub mod convert;
pub mod groups;
pub mod register;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{Client, ConnectOptions, EventType, TlsOptions};
use futures::StreamExt;
use sextant_core::recover::{Backoff, Closed, EventSender, resilient_task};
use sextant_core::{
    Error, Event, EventStream, Hostname, Registry, RegistryId, Rule, RuleSource, RuleStream,
};
use tracing::info;

use convert::{Layout, State};

/// TLS for the etcd connection.
#[derive(Clone, Debug, Default)]
pub struct EtcdTls {
    /// CA certificate (PEM) to verify etcd with.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), with `key`.
    pub cert: Option<PathBuf>,
    /// Client key (PEM), with `cert`.
    pub key: Option<PathBuf>,
}

/// How to reach etcd and where to look.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Client URLs, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Prefix of service and endpoint documents. Default `/sextant/`.
    pub prefix: String,
    /// Prefix of grpc-go naming-convention keys; `None` reads none.
    pub naming_prefix: Option<String>,
    /// User name and password, if etcd has authentication on; the password
    /// is never printed.
    pub credentials: Option<(String, sextant_core::Secret)>,
    /// TLS, if etcd's URLs are `https`.
    pub tls: Option<EtcdTls>,
    /// Reconnect backoff.
    pub backoff: Backoff,
    /// Connect and request timeout. Default 5 s.
    pub timeout: Duration,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/sextant/".into(),
            naming_prefix: None,
            credentials: None,
            tls: None,
            backoff: Backoff::default(),
            timeout: Duration::from_secs(5),
        }
    }
}

impl EtcdConfig {
    fn layout(&self) -> Layout {
        Layout {
            prefix: self.prefix.clone(),
            naming_prefix: self.naming_prefix.clone(),
        }
    }

    /// Connects a client with these settings.
    pub async fn connect(&self) -> Result<Client, Error> {
        let mut options = ConnectOptions {
            connect_timeout: Some(self.timeout),
            keep_alive: Some((Duration::from_secs(10), self.timeout)),
            credentials: self.credentials.clone(),
            tls: None,
        };
        if let Some(tls) = &self.tls {
            let mut t = TlsOptions::default();
            if let Some(ca) = &tls.ca {
                let pem = std::fs::read(ca).map_err(|e| {
                    Error::unavailable_from(format!("cannot read etcd CA {}", ca.display()), e)
                })?;
                t.ca = Some(pem);
            }
            if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
                let c = std::fs::read(cert).map_err(|e| {
                    Error::unavailable_from(format!("cannot read {}", cert.display()), e)
                })?;
                let k = std::fs::read(key).map_err(|e| {
                    Error::unavailable_from(format!("cannot read {}", key.display()), e)
                })?;
                t.identity = Some((c, k));
            }
            options.tls = Some(t);
        }
        Client::connect(&self.endpoints, options)
            .await
            .map_err(|e| {
                Error::unavailable_from(
                    format!("cannot connect to etcd at {}", self.endpoints.join(",")),
                    e,
                )
            })
    }
}

/// What a session leaves for the next one: the state and its revision.
#[derive(Default)]
struct Cursor {
    state: State,
    revision: Option<i64>,
    /// Keys that could not be read, with why: reported again after every
    /// Reset (which clears what is shown) until fixed or deleted.
    broken: Problems,
}

/// Malformed keys and why, by key.
#[derive(Default)]
struct Problems(BTreeMap<String, String>);

impl Problems {
    /// How a key is named in a problem.
    fn object(key: &str) -> String {
        format!("etcd key {key}")
    }

    /// `key` cannot be read: reported.
    async fn broken<T: sextant_core::Keyed>(
        &mut self,
        tx: &EventSender<T>,
        key: String,
        reason: String,
    ) -> Result<(), Closed> {
        let object = Problems::object(&key);
        self.0.insert(key, reason.clone());
        tx.invalid(object, reason).await
    }

    /// `key` was read well or deleted: a problem it had is retracted.
    async fn fine<T: sextant_core::Keyed>(
        &mut self,
        tx: &EventSender<T>,
        key: &str,
    ) -> Result<(), Closed> {
        if self.0.remove(key).is_some() {
            tx.resolved(Problems::object(key)).await?;
        }
        Ok(())
    }

    /// Every problem again, after a Reset cleared what is shown.
    async fn report_all<T: sextant_core::Keyed>(&self, tx: &EventSender<T>) -> Result<(), Closed> {
        for (key, reason) in &self.0 {
            tx.invalid(Problems::object(key), reason.clone()).await?;
        }
        Ok(())
    }
}

/// A registry over etcd.
pub struct EtcdRegistry {
    id: RegistryId,
    config: EtcdConfig,
    groups: Arc<groups::EtcdGroups>,
}

impl EtcdRegistry {
    /// A registry with id `id` (conventionally `etcd/NAME`).
    pub fn new(id: impl Into<RegistryId>, config: EtcdConfig) -> Self {
        EtcdRegistry {
            id: id.into(),
            groups: groups::EtcdGroups::new(config.clone()),
            config,
        }
    }

    /// The WorkloadGroups this registry reads (`PREFIX workloadgroups/`),
    /// keeping the entries VMs register from them in etcd (see
    /// [`groups`]), for `Sextant::workload_groups`.
    pub fn workload_groups(&self) -> Arc<groups::EtcdGroups> {
        Arc::clone(&self.groups)
    }
}

impl Registry for EtcdRegistry {
    fn id(&self) -> &RegistryId {
        &self.id
    }

    fn watch(&self) -> EventStream {
        let config = self.config.clone();
        // The cursor outlives sessions: the next one resumes where this one stopped.
        let cursor = Arc::new(Mutex::new(Cursor::default()));
        let groups = Arc::clone(&self.groups);
        resilient_task(self.config.backoff.clone(), move |tx| {
            let (config, cursor, groups) = (config.clone(), cursor.clone(), groups.clone());
            async move { session(&config, &cursor, &groups, &tx).await }
        })
    }
}

/// Route rules and destination policies under `PREFIX routes/` and
/// `PREFIX policies/`: read at one revision, then watched. A session that
/// starts again (after an outage or a compaction) reads them all again and
/// sends them as one `Reset`: rules are few.
impl RuleSource for EtcdRegistry {
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

/// One connection of the rules stream: read everything, then follow.
async fn rules_session(config: &EtcdConfig, tx: &EventSender<Rule>) -> Result<(), Error> {
    match follow_rules(config, tx).await {
        Err(Stop::Failed(e)) => Err(e),
        Err(Stop::Closed) | Ok(()) => Ok(()),
    }
}

/// Why a session stops: etcd failed, or nobody listens any more.
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

async fn follow_rules(config: &EtcdConfig, tx: &EventSender<Rule>) -> Result<(), Stop> {
    let mut client = config.connect().await?;
    let layout = config.layout();
    let unavailable = |e: tonic::Status| Error::unavailable_from("etcd read failed", e);
    loop {
        let (revision, read) = client
            .get_all(config.prefix.as_str(), None)
            .await
            .map_err(unavailable)?;
        let mut rules = Vec::new();
        let mut problems = Problems::default();
        for kv in &read {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let parsed = match layout.classify_rule(&key) {
                Ok(None) => continue,
                Ok(Some(k)) => convert::parse_rule(&k, kv.value()),
                Err(reason) => Err(reason),
            };
            match parsed {
                Ok(rule) => rules.push(rule),
                Err(reason) => {
                    problems.0.insert(key, reason);
                }
            }
        }
        info!(rules = rules.len(), revision, "etcd rules read");
        tx.reset(rules).await?;
        problems.report_all(tx).await?;
        let mut stream = client
            .watch(config.prefix.as_str(), revision + 1)
            .await
            .map_err(|e| Error::unavailable_from("etcd watch failed", e))?;
        loop {
            let response = stream
                .message()
                .await
                .map_err(|e| Error::unavailable_from("etcd watch failed", e))?
                .ok_or_else(|| Error::unavailable("etcd watch ended"))?;
            if response.canceled() {
                if response.compact_revision() > 0 {
                    break; // Read everything again, as one Reset.
                }
                return Err(Error::unavailable(format!(
                    "etcd cancelled the watch: {}",
                    response.cancel_reason()
                ))
                .into());
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let k = match layout.classify_rule(&key) {
                    Ok(Some(k)) => k,
                    Ok(None) => continue,
                    Err(reason) => {
                        problems.broken(tx, key, reason).await?;
                        continue;
                    }
                };
                match event.event_type() {
                    EventType::Delete => {
                        tx.delete(k).await?;
                        problems.fine(tx, &key).await?;
                    }
                    EventType::Put => match convert::parse_rule(&k, kv.value()) {
                        Ok(rule) => {
                            tx.apply(rule).await?;
                            problems.fine(tx, &key).await?;
                        }
                        // The key's last good value, if any, stays.
                        Err(reason) => problems.broken(tx, key, reason).await?,
                    },
                }
            }
        }
    }
}

fn lock(cursor: &Mutex<Cursor>) -> std::sync::MutexGuard<'_, Cursor> {
    cursor.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads everything under both prefixes at one revision: the state, the
/// revision, and the keys that could not be read.
async fn full_read(
    client: &mut Client,
    config: &EtcdConfig,
) -> Result<(State, i64, Problems), Error> {
    let layout = config.layout();
    let unavailable = |e: tonic::Status| Error::unavailable_from("etcd read failed", e);
    let (revision, first) = client
        .get_all(config.prefix.as_str(), None)
        .await
        .map_err(unavailable)?;
    let mut kvs: Vec<(String, Vec<u8>)> = first
        .into_iter()
        .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv.value))
        .collect();
    if let Some(naming) = &config.naming_prefix {
        let (_, second) = client
            .get_all(naming.as_str(), Some(revision))
            .await
            .map_err(unavailable)?;
        kvs.extend(
            second
                .into_iter()
                .map(|kv| (String::from_utf8_lossy(&kv.key).into_owned(), kv.value)),
        );
    }
    let mut state = State::default();
    let mut problems = Problems::default();
    for (key, value) in kvs {
        match layout.classify_entry(&key) {
            Ok(Some(k)) => {
                match convert::parse_entry(&k, &value) {
                    Ok(entry) => state.store_entry(k, Some(entry)),
                    Err(reason) => {
                        problems.0.insert(key, reason);
                    }
                }
                continue;
            }
            Ok(None) => {}
            Err(reason) => {
                problems.0.insert(key, reason);
                continue;
            }
        }
        match layout.classify(&key) {
            Ok(Some(k)) => match convert::parse(&k, &value) {
                Ok(object) => state.put(k, object),
                Err(reason) => {
                    problems.0.insert(key, reason);
                }
            },
            Ok(None) => {}
            Err(reason) => {
                problems.0.insert(key, reason);
            }
        }
    }
    // Every entry converted once; what is not served of an entry is its
    // key's problem (unless the key could not be read at all).
    state.reconvert();
    for (k, reason) in state.entry_problems() {
        problems
            .0
            .entry(layout.entry_key(&k))
            .or_insert_with(|| format!("not served: {reason}"));
    }
    Ok((state, revision, problems))
}

/// One connection: read (or resume), then follow the watch until it fails.
async fn session(
    config: &EtcdConfig,
    cursor: &Mutex<Cursor>,
    groups: &groups::EtcdGroups,
    tx: &EventSender,
) -> Result<(), Error> {
    match follow(config, cursor, groups, tx).await {
        Err(Stop::Failed(e)) => Err(e),
        Err(Stop::Closed) | Ok(()) => Ok(()),
    }
}

async fn follow(
    config: &EtcdConfig,
    cursor: &Mutex<Cursor>,
    groups: &groups::EtcdGroups,
    tx: &EventSender,
) -> Result<(), Stop> {
    let mut client = config.connect().await?;
    let layout = config.layout();
    let mut resume = lock(cursor).revision;
    if let Some(rev) = resume {
        // etcd accepts a watch from a compacted revision and cancels it only
        // after; a range at that revision says so up front.
        match client
            .get(config.prefix.as_str(), true, Some(rev), true)
            .await
        {
            Ok(_) => {}
            Err(e) if e.to_string().contains("compacted") => {
                info!(
                    revision = rev,
                    "etcd history compacted while disconnected; reading everything again"
                );
                resume = None;
            }
            Err(e) => return Err(Error::unavailable_from("etcd read failed", e).into()),
        }
    }
    loop {
        let (revision, resumed) = match resume.take() {
            Some(rev) => (rev, true),
            None => {
                let (state, revision, problems) = full_read(&mut client, config).await?;
                let services = state.services();
                info!(
                    keys = state.len(),
                    services = services.len(),
                    revision,
                    "etcd read"
                );
                groups.groups.set(state.groups());
                {
                    let mut c = lock(cursor);
                    c.state = state;
                    c.revision = Some(revision);
                }
                tx.reset(services).await?;
                // Problems after the Reset, which clears what is shown.
                problems.report_all(tx).await?;
                lock(cursor).broken = problems;
                (revision, false)
            }
        };
        let mut prefixes = vec![config.prefix.clone()];
        if let Some(n) = &config.naming_prefix {
            prefixes.push(n.clone());
        }
        let mut streams = Vec::new();
        for prefix in prefixes {
            let stream = client
                .watch(prefix.as_str(), revision + 1)
                .await
                .map_err(|e| Error::unavailable_from("etcd watch failed", e))?;
            streams.push(futures::stream::unfold(stream, |mut s| async move {
                let item = s.message().await.transpose()?;
                Some((item, s))
            }));
        }
        let mut merged = futures::stream::select_all(streams.into_iter().map(|s| s.boxed()));
        // After a resume, the held state is announced once etcd has accepted
        // the watch (a compacted revision is refused in its first response).
        let mut announce = resumed;
        loop {
            let Some(item) = merged.next().await else {
                return Err(Error::unavailable("etcd watch ended").into());
            };
            let response = item.map_err(|e| Error::unavailable_from("etcd watch failed", e))?;
            if response.canceled() {
                if response.compact_revision() > 0 {
                    info!(
                        compact_revision = response.compact_revision(),
                        "etcd history compacted past our revision; reading everything again"
                    );
                    break; // Full read, as one Reset.
                }
                return Err(Error::unavailable(format!(
                    "etcd cancelled the watch: {}",
                    response.cancel_reason()
                ))
                .into());
            }
            if std::mem::take(&mut announce) {
                // Back after an outage: this clears staleness (and what
                // problems are shown: those still true are said again); the
                // watch then brings what changed meanwhile.
                let services = lock(cursor).state.services();
                tx.reset(services).await?;
                let broken = std::mem::take(&mut lock(cursor).broken);
                broken.report_all(tx).await?;
                lock(cursor).broken = broken;
            }
            let mut touched: BTreeSet<Hostname> = BTreeSet::new();
            // Per key read, in order: None when read well (or deleted),
            // else why not.
            let mut keys: Vec<(String, Option<String>)> = Vec::new();
            // Per entry key held: what is not served of it, if anything.
            let mut served: Vec<(String, Option<String>)> = Vec::new();
            {
                let mut c = lock(cursor);
                let mut entries_changed = false;
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    match layout.classify_entry(&key) {
                        Ok(Some(k)) => {
                            let entry = match event.event_type() {
                                EventType::Delete => Ok(None),
                                EventType::Put => convert::parse_entry(&k, kv.value()).map(Some),
                            };
                            match entry {
                                Ok(entry) => {
                                    entries_changed = true;
                                    c.state.store_entry(k, entry);
                                    keys.push((key, None));
                                }
                                // The entry's last good value, if any, stays.
                                Err(reason) => keys.push((key, Some(reason))),
                            }
                            continue;
                        }
                        Ok(None) => {}
                        Err(reason) => {
                            keys.push((key, Some(reason)));
                            continue;
                        }
                    }
                    let k = match layout.classify(&key) {
                        Ok(Some(k)) => k,
                        Ok(None) => continue,
                        Err(reason) => {
                            keys.push((key, Some(reason)));
                            continue;
                        }
                    };
                    match event.event_type() {
                        EventType::Delete => {
                            touched.insert(k.hostname().clone());
                            c.state.delete(&k);
                            keys.push((key, None));
                        }
                        EventType::Put => match convert::parse(&k, kv.value()) {
                            Ok(object) => {
                                touched.insert(k.hostname().clone());
                                c.state.put(k, object);
                                keys.push((key, None));
                            }
                            // The key's last good value, if any, stays.
                            Err(reason) => keys.push((key, Some(reason))),
                        },
                    }
                }
                if entries_changed {
                    // The batch's entries converted once.
                    touched.extend(c.state.reconvert());
                    groups.groups.set(c.state.groups());
                    let problems = c.state.entry_problems();
                    for k in c.state.entry_keys() {
                        let p = problems
                            .iter()
                            .find(|(p, _)| p == &k)
                            .map(|(_, r)| r.clone());
                        served.push((layout.entry_key(&k), p));
                    }
                }
                if let Some(h) = response.header() {
                    c.revision = Some(c.revision.unwrap_or(0).max(h.revision));
                }
            }
            // The cursor's lock is not held across a send.
            let mut broken = std::mem::take(&mut lock(cursor).broken);
            let mut reported = report(tx, &mut broken, keys).await;
            if reported.is_ok() {
                reported = entry_report(tx, &mut broken, served).await;
            }
            lock(cursor).broken = broken;
            reported?;
            let events: Vec<Event> = {
                let c = lock(cursor);
                touched
                    .into_iter()
                    .map(|h| match c.state.service(&h) {
                        Some(s) => Event::Apply(s),
                        None => Event::Delete(h),
                    })
                    .collect()
            };
            for event in events {
                tx.send(Ok(event)).await?;
            }
        }
        // Compacted: read everything again.
        lock(cursor).revision = None;
    }
}

/// What is not served of each entry (`served`: per entry key, the
/// problem or none), as its key's problem, prefixed `not served: `; a key
/// whose value cannot be read keeps that problem (its last good entry is
/// what is served).
async fn entry_report(
    tx: &EventSender,
    broken: &mut Problems,
    served: Vec<(String, Option<String>)>,
) -> Result<(), Closed> {
    const NOT_SERVED: &str = "not served: ";
    for (key, problem) in served {
        let shown = broken.0.get(&key);
        if shown.is_some_and(|r| !r.starts_with(NOT_SERVED)) {
            continue;
        }
        match problem {
            Some(p) => {
                let reason = format!("{NOT_SERVED}{p}");
                if shown != Some(&reason) {
                    broken.broken(tx, key, reason).await?;
                }
            }
            None => broken.fine(tx, &key).await?,
        }
    }
    Ok(())
}

/// In order, per key read: its problem reported, or retracted once it was
/// read well (or deleted).
async fn report(
    tx: &EventSender,
    broken: &mut Problems,
    keys: Vec<(String, Option<String>)>,
) -> Result<(), Closed> {
    for (key, problem) in keys {
        match problem {
            Some(reason) => broken.broken(tx, key, reason).await?,
            None => broken.fine(tx, &key).await?,
        }
    }
    Ok(())
}
