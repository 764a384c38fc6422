//! `/metrics`: every metric in the OpenMetrics text form, encoded by the
//! Prometheus project's client crate. The server's own families are
//! collected at each scrape from the aggregator's status, the xDS server's
//! counters and connections and the admin listener's counts (the values
//! live where they are counted; the collector only reads them); other
//! parts of a program add theirs as [`Collector`]s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeMetric, MetricEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use sextant_aggregate::SyncState;
use sextant_xds::server::status::Histogram;
use sextant_xds::{Metrics, ResourceType};

use super::AdminState;

/// The labels of one sample: names and values.
pub type Labels = Vec<(&'static str, String)>;

/// Writes metric families through the client crate's encoder, one call
/// per family: what every collector of this crate uses.
pub struct Families<'a>(DescriptorEncoder<'a>);

impl<'a> Families<'a> {
    /// Families written into `encoder` (a [`Collector::encode`]'s).
    pub fn new(encoder: DescriptorEncoder<'a>) -> Self {
        Families(encoder)
    }

    fn family<V>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        samples: impl IntoIterator<Item = (Labels, V)>,
        encode: impl Fn(MetricEncoder<'_>, V) -> std::fmt::Result,
    ) -> std::fmt::Result {
        let mut family = self.0.encode_descriptor(name, help, None, kind)?;
        let mut samples = samples.into_iter().peekable();
        // One unlabelled sample is written on the family's own encoder (an
        // empty label set would write `name{}`).
        if samples.peek().is_some_and(|(labels, _)| labels.is_empty())
            && let Some((_, value)) = samples.next()
        {
            debug_assert!(
                samples.next().is_none(),
                "{name}: an unlabelled sample and others"
            );
            return encode(family, value);
        }
        for (labels, value) in samples {
            encode(family.encode_family(&labels)?, value)?;
        }
        Ok(())
    }

    /// A gauge with one unlabelled sample.
    pub fn gauge(
        &mut self,
        name: &str,
        help: &str,
        value: impl EncodeGaugeValue + Clone + std::fmt::Debug + Send + Sync,
    ) -> std::fmt::Result {
        self.gauges(name, help, [(Labels::new(), value)])
    }

    /// A gauge family: one sample per label set.
    pub fn gauges<V: EncodeGaugeValue + std::fmt::Debug + Send + Sync>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, V)>,
    ) -> std::fmt::Result {
        self.family(name, help, MetricType::Gauge, samples, |e, v| {
            ConstGauge::new(v).encode(e)
        })
    }

    /// A counter with one unlabelled sample. `name` ends in `_total`, as
    /// the sample is named; the family's name is without it (OpenMetrics).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> std::fmt::Result {
        self.counters(name, help, [(Labels::new(), value)])
    }

    /// A counter family: one sample per label set.
    pub fn counters(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, u64)>,
    ) -> std::fmt::Result {
        let family = name.strip_suffix("_total").unwrap_or(name);
        self.family(family, help, MetricType::Counter, samples, |e, v| {
            ConstCounter::new(v).encode(e)
        })
    }

    /// A histogram family: one histogram per label set.
    pub fn histograms<'h>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, &'h Histogram)>,
    ) -> std::fmt::Result {
        self.family(name, help, MetricType::Histogram, samples, |e, h| {
            h.metric().encode(e)
        })
    }
}

/// A collector shared by reference (the registry owns its collectors; the
/// program keeps the values they read).
#[derive(Debug)]
struct Shared(Arc<dyn Collector>);

impl Collector for Shared {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        self.0.encode(encoder)
    }
}

/// The server's own families, read at each scrape.
struct ServerFamilies(AdminState);

impl std::fmt::Debug for ServerFamilies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerFamilies")
    }
}

impl Collector for ServerFamilies {
    fn encode(&self, encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        server_families(&self.0, &mut Families::new(encoder))
    }
}

/// The OpenMetrics text of every metric: the server's and the sources'.
pub fn render_metrics(s: &AdminState) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ServerFamilies(s.clone())));
    for source in &s.sources {
        registry.register_collector(Box::new(Shared(source.clone())));
    }
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        // Writing into a String fails only if a collector fails.
        tracing::warn!(error = %e, "a metrics collector failed; /metrics is incomplete");
    }
    out
}

fn one(labels: &[(&'static str, &str)]) -> Labels {
    labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

fn per_type<'m>(
    values: &'m [AtomicU64; sextant_xds::ResourceType::COUNT],
) -> impl Iterator<Item = (Labels, u64)> + 'm {
    ResourceType::ALL.into_iter().map(|t| {
        (
            one(&[("type", t.short())]),
            Metrics::get(&values[t.index()]),
        )
    })
}

/// Every family of the server itself.
fn server_families(s: &AdminState, p: &mut Families<'_>) -> std::fmt::Result {
    let status = s.aggregator.status().borrow().clone();
    let view = s.aggregator.view().borrow().clone();
    let m = s.xds.metrics();

    p.gauge(
        "sextant_ready",
        "1 once the merged view is being served.",
        i64::from(status.ready),
    )?;
    p.gauge(
        "sextant_services",
        "Services in the merged view.",
        status.services as u64,
    )?;
    p.gauge(
        "sextant_endpoints",
        "Endpoints in the merged view.",
        status.endpoints as u64,
    )?;
    p.gauge(
        "sextant_conflicts",
        "Disagreements between registries about a service.",
        status.conflicts as u64,
    )?;
    p.gauges(
        "sextant_dropped_endpoints",
        "Endpoints of a registry not served because they match none of the service's ports (see /debug/registryz).",
        view.conflicts
            .iter()
            .filter(|c| c.field == sextant_core::ConflictField::DroppedEndpoints)
            .map(|c| {
                (
                    one(&[("service", c.hostname.as_str()), ("registry", c.other.as_str())]),
                    c.endpoints_dropped as u64,
                )
            }),
    )?;
    let mut rule_conflicts: BTreeMap<(&str, &str, &str), u64> = BTreeMap::new();
    for c in view.conflicts.iter() {
        let kind = match c.field {
            sextant_core::ConflictField::RouteRule => "route",
            sextant_core::ConflictField::DestinationPolicy => "policy",
            _ => continue,
        };
        *rule_conflicts
            .entry((c.hostname.as_str(), c.other.as_str(), kind))
            .or_default() += 1;
    }
    p.gauges(
        "sextant_rule_conflicts",
        "Rules ignored for a service because another rule of the same kind is in force there (see /debug/registryz).",
        rule_conflicts.into_iter().map(|((service, registry, kind), n)| {
            (one(&[("service", service), ("registry", registry), ("kind", kind)]), n)
        }),
    )?;

    registry_families(&status, p)?;

    p.gauge(
        "sextant_xds_connections",
        "Connected proxies and clients.",
        Metrics::get(&m.connections_active),
    )?;
    // Proxies by client kind and by whether they hold the newest
    // configuration (what `sextant status` shows, for dashboards).
    let connections = s.xds.connections();
    let mut by: BTreeMap<(String, &str), u64> = BTreeMap::new();
    for client in ["envoy", "grpc"] {
        for sync in ["CURRENT", "BEHIND"] {
            by.insert((client.to_owned(), sync), 0);
        }
    }
    for c in &connections {
        let sync = match c.sync {
            sextant_xds::server::ProxySync::Current => "CURRENT",
            sextant_xds::server::ProxySync::Behind => "BEHIND",
        };
        *by.entry((c.client.as_str().to_owned(), sync)).or_default() += 1;
    }
    p.gauges(
        "sextant_xds_proxies",
        "Connected proxies by client kind and sync state (CURRENT: caught up with the newest snapshot and acknowledged all of it).",
        by.into_iter()
            .map(|((client, sync), n)| (vec![("client", client), ("sync", sync.to_owned())], n)),
    )?;
    p.gauge(
        "sextant_xds_registered_workloads",
        "Workloads (VMs) registered from a WorkloadGroup by a stream open on this replica.",
        Metrics::get(&m.workloads_registered),
    )?;
    p.gauge(
        "sextant_xds_tcp_connections",
        "TCP connections open on the xDS port.",
        Metrics::get(&m.tcp_connections_active),
    )?;
    for (name, help, value) in [
        (
            "sextant_xds_connections_accepted_total",
            "xDS streams accepted.",
            &m.connections_total,
        ),
        (
            "sextant_xds_connections_refused_total",
            "xDS connections closed at once because the maximum was open.",
            &m.connections_refused_total,
        ),
        (
            "sextant_xds_handshake_timeouts_total",
            "xDS connections closed because no HTTP/2 preface came within the handshake timeout.",
            &m.handshake_timeouts_total,
        ),
        (
            "sextant_xds_accept_errors_total",
            "Failed accepts on the xDS port (out of file descriptors, for one).",
            &m.accept_errors_total,
        ),
        (
            "sextant_xds_tls_handshake_failures_total",
            "TLS handshakes on the xDS TLS port that failed or timed out.",
            &m.tls_handshake_failures_total,
        ),
        (
            "sextant_xds_tls_reloads_total",
            "Times changed TLS certificate files were loaded.",
            &m.tls_reloads_total,
        ),
        (
            "sextant_xds_tls_reload_failures_total",
            "Times changed TLS certificate files did not load (the previous ones kept serving).",
            &m.tls_reload_failures_total,
        ),
        (
            "sextant_xds_identity_refused_total",
            "xDS streams refused: the node claimed another namespace than its certificate, or proved no identity where one is required.",
            &m.identity_refused_total,
        ),
        (
            "sextant_xds_workload_registrations_refused_total",
            "Streams that named a WorkloadGroup and were refused (no such group in the namespace, no address, auto-registration off).",
            &m.workload_registrations_refused_total,
        ),
        (
            "sextant_admin_connections_refused_total",
            "Admin connections closed at once because the maximum was open.",
            &s.listener.refused_total,
        ),
        (
            "sextant_admin_connections_timed_out_total",
            "Admin connections closed idle or at the end of their lifetime.",
            &s.listener.timed_out_total,
        ),
        (
            "sextant_xds_bytes_sent_total",
            "Bytes of responses sent.",
            &m.bytes_sent_total,
        ),
        (
            "sextant_xds_stale_nonces_total",
            "Requests whose nonce was stale.",
            &m.stale_nonces_total,
        ),
        (
            "sextant_xds_unknown_type_requests_total",
            "Requests for types Sextant does not serve.",
            &m.unknown_type_requests_total,
        ),
        (
            "sextant_xds_ack_timeouts_total",
            "Responses never acknowledged within the timeout.",
            &m.ack_timeouts_total,
        ),
        (
            "sextant_xds_plans_computed_total",
            "A connection's next response computed by the connection itself.",
            &m.plans_computed_total,
        ),
        (
            "sextant_xds_plans_shared_total",
            "A connection's next response taken from a connection in the same state.",
            &m.plans_shared_total,
        ),
        (
            "sextant_xds_resources_encoded_total",
            "Resources encoded (each once per version).",
            &m.resources_encoded_total,
        ),
    ] {
        p.counter(name, help, Metrics::get(value))?;
    }
    let mut unhonoured: BTreeMap<(String, String, &'static str), u64> = BTreeMap::new();
    for c in connections {
        for u in c.unhonoured {
            let rule = format!("{}/{}", u.rule.namespace, u.rule.name);
            *unhonoured
                .entry((rule, u.feature, u.client.as_str()))
                .or_default() += 1;
        }
    }
    p.gauges(
        "sextant_xds_rule_features_unhonoured",
        "Connected clients that cannot honour a feature of a rule bound to a service they use (the feature is left out of what they receive; /debug/syncz names them).",
        unhonoured.into_iter().map(|((rule, feature, client), n)| {
            (
                vec![("rule", rule), ("feature", feature), ("client", client.to_owned())],
                n,
            )
        }),
    )?;
    let caches = s.xds.cache_sizes();
    for (name, help, value) in [
        (
            "sextant_xds_subscriptions_cached",
            "SotW subscriptions shared between connections (released with their last user).",
            caches.subscriptions,
        ),
        (
            "sextant_xds_subscription_names_cached",
            "Names held by the shared SotW subscriptions.",
            caches.subscription_names,
        ),
        (
            "sextant_xds_plans_cached",
            "Plans cached for the current snapshot (bounded).",
            caches.plans,
        ),
        (
            "sextant_xds_plan_names_cached",
            "Subscribed names held by the cached plans (bounded).",
            caches.plan_names,
        ),
    ] {
        p.gauge(name, help, value as u64)?;
    }
    p.counters(
        "sextant_xds_responses_total",
        "Responses sent.",
        per_type(&m.responses_total),
    )?;
    p.counters(
        "sextant_xds_resources_sent_total",
        "Resources sent in responses.",
        per_type(&m.resources_sent_total),
    )?;
    p.counters(
        "sextant_xds_nacks_total",
        "Responses rejected by a client.",
        per_type(&m.nacks_total),
    )?;
    let pushes = Metrics::get(&m.snapshots_total);
    let endpoint_only = Metrics::get(&m.endpoint_only_snapshots_total);
    p.counters(
        "sextant_xds_pushes_total",
        "Snapshots built and pushed (coalesced changes), by trigger: endpoints (endpoint changes only, the fast path) or configuration (anything else).",
        [
            (one(&[("trigger", "endpoints")]), endpoint_only),
            (
                one(&[("trigger", "configuration")]),
                pushes.saturating_sub(endpoint_only),
            ),
        ],
    )?;
    p.histograms(
        "sextant_xds_push_latency_seconds",
        "From the first change of a batch to its push.",
        [(Labels::new(), &m.push_latency)],
    )?;
    p.histograms(
        "sextant_xds_ack_latency_seconds",
        "From a response to its ACK or NACK.",
        [(Labels::new(), &m.ack_latency)],
    )?;
    p.histograms(
        "sextant_xds_change_to_send_seconds",
        "Per type: from the first change a response carries reaching the publisher to the response being sent.",
        ResourceType::ALL
            .into_iter()
            .map(|t| (one(&[("type", t.short())]), &m.sent_after_change[t.index()])),
    )?;
    p.histograms(
        "sextant_xds_convergence_seconds",
        "Per type: from the first change a response carries reaching the publisher to the client's ACK of it.",
        ResourceType::ALL
            .into_iter()
            .map(|t| (one(&[("type", t.short())]), &m.convergence[t.index()])),
    )
}

/// Each registry's state, staleness and counts.
fn registry_families(
    status: &sextant_aggregate::AggregateStatus,
    p: &mut Families<'_>,
) -> std::fmt::Result {
    let labels = |r: &sextant_aggregate::RegistryStatus| {
        vec![
            ("registry", r.id.as_str().to_owned()),
            ("kind", kind_label(r).to_owned()),
        ]
    };
    p.gauges(
        "sextant_registry_state",
        "1 for the registry's current state (syncing, synced, stale, dropped).",
        status.registries.iter().flat_map(|r| {
            [
                (SyncState::Syncing, "syncing"),
                (SyncState::Synced, "synced"),
                (SyncState::Stale, "stale"),
                (SyncState::Dropped, "dropped"),
            ]
            .into_iter()
            .map(move |(state, name)| {
                let mut l = labels(r);
                l.push(("state", name.to_owned()));
                (l, i64::from(r.state == state))
            })
        }),
    )?;
    let now = std::time::SystemTime::now();
    p.gauges(
        "sextant_registry_stale_seconds",
        "How long the registry has been stale; 0 when it is not.",
        status.registries.iter().map(|r| {
            let stale = r
                .stale_since
                .and_then(|t| now.duration_since(t).ok())
                .map_or(0.0, |d| d.as_secs_f64());
            (labels(r), stale)
        }),
    )?;
    type Get = fn(&sextant_aggregate::RegistryStatus) -> u64;
    let gauges: [(&str, &str, Get); 3] = [
        (
            "sextant_registry_services",
            "Services the registry contributes.",
            |r| r.services as u64,
        ),
        (
            "sextant_registry_endpoints",
            "Endpoints the registry contributes.",
            |r| r.endpoints as u64,
        ),
        (
            "sextant_registry_problems",
            "Objects of the registry currently rejected.",
            |r| r.problems.len() as u64,
        ),
    ];
    for (name, help, get) in gauges {
        p.gauges(
            name,
            help,
            status.registries.iter().map(|r| (labels(r), get(r))),
        )?;
    }
    let counters: [(&str, &str, Get); 3] = [
        (
            "sextant_registry_events_total",
            "Events received from the registry.",
            |r| r.events_total,
        ),
        (
            "sextant_registry_errors_total",
            "Errors reported by the registry.",
            |r| r.errors_total,
        ),
        (
            "sextant_registry_rejected_total",
            "Services from the registry that failed validation.",
            |r| r.rejected_total,
        ),
    ];
    for (name, help, get) in counters {
        p.counters(
            name,
            help,
            status.registries.iter().map(|r| (labels(r), get(r))),
        )?;
    }
    Ok(())
}

/// `services` or `rules`: one registry id may be both (the file registry
/// is), so every per-registry series carries it, or two would collide.
fn kind_label(r: &sextant_aggregate::RegistryStatus) -> &'static str {
    match r.kind {
        sextant_aggregate::SourceKind::Services => "services",
        sextant_aggregate::SourceKind::Rules => "rules",
    }
}
