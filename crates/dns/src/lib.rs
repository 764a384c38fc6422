//! Sextant resolves the DNS names of services' endpoints once, for every
//! proxy: a thousand sidecars do not each ask the same question.
//!
//! [`Resolver::wrap`] puts a registry behind a resolver: every service it
//! reports whose endpoints carry DNS names (an Istio ServiceEntry with
//! resolution DNS, a file service written with names) leaves the wrapper
//! with one endpoint per address each name resolves to (the endpoint's
//! ports, labels, locality, weight and health copied), so the aggregator
//! and the proxies see IP addresses served over EDS. Services the proxy
//! resolves itself ([`sextant_core::Resolution::DnsRoundRobin`], `NONE`)
//! pass untouched.
//!
//! Each name is followed by one task while some wrapped registry reports
//! it: asked again when its answer's TTL runs out (clamped to
//! [`Settings::min_ttl`] and [`Settings::max_ttl`]); a failed query
//! (timeout, SERVFAIL, NXDOMAIN, no address) keeps the last good answer
//! and is tried again with backoff; the wrapper sends an `Apply` for each
//! service whose addresses changed. A service's new name is waited for
//! ([`Settings::first_wait`] at most) before the service is passed on, so a
//! new service does not first reach proxies with no endpoints. Bounded:
//! [`Settings::max_names`] names are followed, each query has a timeout.
//!
//! The addresses: IPv4 when a name has any, else IPv6 (Envoy's
//! `V4_PREFERRED`). Names are asked as written, fully qualified (no search
//! domains).

#![forbid(unsafe_code)]

mod follow;
mod wrap;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use sextant_core::{Hostname, Registry};
use tokio::sync::watch;

pub use wrap::Resolving;

/// How names are resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The DNS servers asked (UDP, TCP when an answer is truncated);
    /// empty: the system's (`/etc/resolv.conf`).
    pub servers: Vec<SocketAddr>,
    /// How long one query may take.
    pub timeout: Duration,
    /// The shortest time an answer is kept before asking again (a TTL of
    /// 0 would ask in a loop).
    pub min_ttl: Duration,
    /// The longest.
    pub max_ttl: Duration,
    /// The first wait after a failure; doubled each time up to
    /// [`Settings::max_ttl`] or 30 s, whichever is shorter.
    pub retry: Duration,
    /// How many names are followed at most; more are refused (their
    /// endpoints are not served) and reported.
    pub max_names: usize,
    /// How long a service with a name not yet answered is held back. A
    /// wait that ran out (a DNS server that does not answer) is not made
    /// again for a minute: services pass on at once meanwhile and get
    /// their addresses when the answers come, so a slow server does not
    /// delay every event of every registry by this much.
    pub first_wait: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            servers: Vec::new(),
            timeout: Duration::from_secs(2),
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(3600),
            retry: Duration::from_secs(1),
            max_names: 10_000,
            first_wait: Duration::from_secs(1),
        }
    }
}

/// Resolves and follows names for the registries it wraps. Cheap to
/// clone; every clone shares the names.
#[derive(Clone)]
pub struct Resolver {
    shared: Arc<Shared>,
}

struct Shared {
    lookup: TokioResolver,
    settings: Settings,
    names: Mutex<HashMap<Hostname, Name>>,
    /// Moves whenever an answer changes or a name's first query ends.
    changed: watch::Sender<u64>,
    queries: AtomicU64,
    failures: AtomicU64,
    /// When a first wait last ran out (see [`Settings::first_wait`]).
    gave_up: Mutex<Option<Instant>>,
}

/// One followed name.
struct Name {
    /// The last good answer (sorted, no duplicates); `None` before one.
    answer: Option<Arc<[IpAddr]>>,
    /// The first query has ended (answered or failed).
    settled: bool,
    /// The last query's failure, while it lasts.
    error: Option<String>,
    /// When it is asked next.
    next: Option<Instant>,
    /// How many wrapped registries' services name it.
    wanted: usize,
    /// Refused: more names than [`Settings::max_names`].
    refused: bool,
    task: Option<tokio::task::AbortHandle>,
}

/// One name as `/debug/dnsz` shows it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct NameStatus {
    /// The name.
    pub name: Hostname,
    /// The addresses served for it (the last good answer).
    pub addresses: Vec<IpAddr>,
    /// The last query's failure, while it lasts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds until it is asked again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_query_in_seconds: Option<f64>,
    /// Not followed: more names than the limit.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
}

/// What the resolver did, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Queries answered with addresses.
    pub answered: u64,
    /// Queries that failed (the last good answer kept).
    pub failed: u64,
    /// Names followed now.
    pub names: u64,
}

impl Resolver {
    /// A resolver with `settings`; an error when the system's
    /// configuration cannot be read (and no servers are given).
    pub fn new(settings: Settings) -> Result<Resolver, String> {
        let (config, mut opts) = if settings.servers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?
        } else {
            let mut group = NameServerConfigGroup::new();
            for server in &settings.servers {
                group.merge(NameServerConfigGroup::from_ips_clear(
                    &[server.ip()],
                    server.port(),
                    true,
                ));
            }
            (
                ResolverConfig::from_parts(None, Vec::new(), group),
                Default::default(),
            )
        };
        opts.timeout = settings.timeout;
        opts.attempts = 1;
        // Sextant keeps the answers and asks when they expire: the
        // resolver's own cache would answer that question itself.
        opts.cache_size = 0;
        opts.ip_strategy = LookupIpStrategy::Ipv4thenIpv6;
        opts.ndots = 0;
        let lookup = TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(opts)
            .build();
        Ok(Resolver {
            shared: Arc::new(Shared {
                lookup,
                settings,
                names: Mutex::new(HashMap::new()),
                changed: watch::Sender::new(0),
                queries: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                gave_up: Mutex::new(None),
            }),
        })
    }

    /// `registry` with its services' names resolved (see the crate's text).
    pub fn wrap<R: Registry>(&self, registry: R) -> Resolving<R> {
        Resolving::new(registry, self.clone())
    }

    /// Every followed name, in name order.
    pub fn status(&self) -> Vec<NameStatus> {
        let now = Instant::now();
        let names = self.shared.lock();
        let mut out: Vec<NameStatus> = names
            .iter()
            .map(|(name, n)| NameStatus {
                name: name.clone(),
                addresses: n
                    .answer
                    .as_deref()
                    .map(<[IpAddr]>::to_vec)
                    .unwrap_or_default(),
                error: n.error.clone(),
                next_query_in_seconds: n
                    .next
                    .map(|t| t.saturating_duration_since(now).as_secs_f64()),
                refused: n.refused,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Queries answered and failed since the start, and names followed.
    pub fn counts(&self) -> Counts {
        Counts {
            answered: self.shared.queries.load(Ordering::Relaxed),
            failed: self.shared.failures.load(Ordering::Relaxed),
            names: self.shared.lock().values().filter(|n| !n.refused).count() as u64,
        }
    }

    /// One more wrapped registry's service names `name`: followed from
    /// now on if it was not.
    fn want(&self, name: &Hostname) {
        let mut names = self.shared.lock();
        if let Some(n) = names.get_mut(name) {
            n.wanted += 1;
            return;
        }
        let followed = names.values().filter(|n| !n.refused).count();
        let refused = followed >= self.shared.settings.max_names;
        if refused {
            tracing::warn!(%name, limit = self.shared.settings.max_names, "too many DNS names to follow; this one's endpoints are not served");
        }
        let task = (!refused).then(|| {
            tokio::spawn(follow::follow(Arc::downgrade(&self.shared), name.clone())).abort_handle()
        });
        names.insert(
            name.clone(),
            Name {
                answer: None,
                settled: refused,
                error: refused.then(|| "not followed: too many names".to_owned()),
                next: None,
                wanted: 1,
                refused,
                task,
            },
        );
    }

    /// A service that named `name` is gone: no longer followed once no
    /// service names it.
    fn release(&self, name: &Hostname) {
        let mut names = self.shared.lock();
        let Some(n) = names.get_mut(name) else {
            return;
        };
        n.wanted -= 1;
        if n.wanted == 0 {
            if let Some(task) = &n.task {
                task.abort();
            }
            names.remove(name);
        }
    }

    /// The last good answer for `name`.
    fn answer(&self, name: &str) -> Option<Arc<[IpAddr]>> {
        self.shared.lock().get(name).and_then(|n| n.answer.clone())
    }

    /// Waits until each of `names` had its first query, or
    /// [`Settings::first_wait`].
    async fn settled(&self, names: &[Hostname]) {
        const NO_WAIT_AFTER_GIVING_UP: Duration = Duration::from_secs(60);
        let gave_up = || {
            self.shared
                .gave_up
                .lock()
                .unwrap_or_else(|e| e.into_inner())
        };
        if names.is_empty() || gave_up().is_some_and(|t| t.elapsed() < NO_WAIT_AFTER_GIVING_UP) {
            return;
        }
        let mut changed = self.shared.changed.subscribe();
        let all_settled = |this: &Self| {
            let map = this.shared.lock();
            names
                .iter()
                .all(|n| map.get(n.as_str()).is_none_or(|n| n.settled))
        };
        let wait = async {
            while !all_settled(self) {
                if changed.changed().await.is_err() {
                    return;
                }
            }
        };
        if tokio::time::timeout(self.shared.settings.first_wait, wait)
            .await
            .is_err()
        {
            *gave_up() = Some(Instant::now());
        }
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.shared.changed.subscribe()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Hostname, Name>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        for n in self.lock().values() {
            if let Some(task) = &n.task {
                task.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests;
