//! `/metrics`: every metric as Prometheus text, written from the
//! aggregator's status, the xDS server's counters and connections, the
//! admin listener's counts, and the [`super::MetricsSource`]s given.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;

use sextant_aggregate::SyncState;
use sextant_xds::server::status::Histogram;
use sextant_xds::{Metrics, ResourceType};

use super::AdminState;

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Prom(String);

impl Prom {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{}}} {value}", labels.join(","));
        }
    }
    fn counter(&mut self, name: &str, help: &str, value: &AtomicU64) {
        self.family(name, "counter", help);
        self.sample(name, &[], Metrics::get(value));
    }
    fn per_type(&mut self, name: &str, kind: &str, help: &str, values: &[AtomicU64; 4]) {
        self.family(name, kind, help);
        for t in ResourceType::ALL {
            self.sample(
                name,
                &[("type", t.short())],
                Metrics::get(&values[t.index()]),
            );
        }
    }
    fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.family(name, "histogram", help);
        self.histogram_samples(name, &[], h);
    }
    fn histogram_samples(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let (buckets, sum, count) = h.read();
        for (bound, n) in buckets {
            let bound = bound.to_string();
            let mut with = labels.to_vec();
            with.push(("le", &bound));
            self.sample(&format!("{name}_bucket"), &with, n);
        }
        let mut with = labels.to_vec();
        with.push(("le", "+Inf"));
        self.sample(&format!("{name}_bucket"), &with, count);
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, count);
    }
}

/// The Prometheus text exposition of every metric.
pub fn render_metrics(s: &AdminState) -> String {
    let status = s.aggregator.status().borrow().clone();
    let m = s.xds.metrics();
    let mut p = Prom(String::new());

    p.family(
        "sextant_ready",
        "gauge",
        "1 once the merged view is being served.",
    );
    p.sample("sextant_ready", &[], u8::from(status.ready));
    p.family("sextant_services", "gauge", "Services in the merged view.");
    p.sample("sextant_services", &[], status.services);
    p.family(
        "sextant_endpoints",
        "gauge",
        "Endpoints in the merged view.",
    );
    p.sample("sextant_endpoints", &[], status.endpoints);
    p.family(
        "sextant_conflicts",
        "gauge",
        "Disagreements between registries about a service.",
    );
    p.sample("sextant_conflicts", &[], status.conflicts);
    p.family(
        "sextant_dropped_endpoints",
        "gauge",
        "Endpoints of a registry not served because they match none of the service's ports (see /debug/registryz).",
    );
    let view = s.aggregator.view().borrow().clone();
    for c in view
        .conflicts
        .iter()
        .filter(|c| c.field == sextant_core::ConflictField::DroppedEndpoints)
    {
        p.sample(
            "sextant_dropped_endpoints",
            &[
                ("service", c.hostname.as_str()),
                ("registry", c.other.as_str()),
            ],
            c.endpoints_dropped,
        );
    }
    p.family(
        "sextant_rule_conflicts",
        "gauge",
        "Rules ignored for a service because another rule of the same kind is in force there (see /debug/registryz).",
    );
    let mut rule_conflicts: std::collections::BTreeMap<(&str, &str, &str), u64> =
        Default::default();
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
    for ((service, registry, kind), n) in rule_conflicts {
        p.sample(
            "sextant_rule_conflicts",
            &[("service", service), ("registry", registry), ("kind", kind)],
            n,
        );
    }

    p.family(
        "sextant_registry_state",
        "gauge",
        "1 for the registry's current state (syncing, synced, stale, dropped).",
    );
    for r in &status.registries {
        for (state, name) in [
            (SyncState::Syncing, "syncing"),
            (SyncState::Synced, "synced"),
            (SyncState::Stale, "stale"),
            (SyncState::Dropped, "dropped"),
        ] {
            p.sample(
                "sextant_registry_state",
                &[
                    ("registry", r.id.as_str()),
                    ("kind", kind_label(r)),
                    ("state", name),
                ],
                u8::from(r.state == state),
            );
        }
    }
    p.family(
        "sextant_registry_stale_seconds",
        "gauge",
        "How long the registry has been stale; 0 when it is not.",
    );
    let now = std::time::SystemTime::now();
    for r in &status.registries {
        let stale = r
            .stale_since
            .and_then(|t| now.duration_since(t).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        p.sample(
            "sextant_registry_stale_seconds",
            &[("registry", r.id.as_str()), ("kind", kind_label(r))],
            stale,
        );
    }
    for (name, help, get) in [
        (
            "sextant_registry_services",
            "Services the registry contributes.",
            (|r: &sextant_aggregate::RegistryStatus| r.services as u64) as fn(&_) -> u64,
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
    ] {
        p.family(
            name,
            if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            },
            help,
        );
        for r in &status.registries {
            p.sample(
                name,
                &[("registry", r.id.as_str()), ("kind", kind_label(r))],
                get(r),
            );
        }
    }

    p.family(
        "sextant_xds_connections",
        "gauge",
        "Connected proxies and clients.",
    );
    p.sample(
        "sextant_xds_connections",
        &[],
        Metrics::get(&m.connections_active),
    );
    // Proxies by client kind and by whether they hold the newest
    // configuration (what `sextant status` shows, for dashboards).
    p.family(
        "sextant_xds_proxies",
        "gauge",
        "Connected proxies by client kind and sync state (CURRENT: caught up with the newest snapshot and acknowledged all of it).",
    );
    let mut by: std::collections::BTreeMap<(String, &str), u64> = Default::default();
    for client in ["envoy", "grpc"] {
        for sync in ["CURRENT", "BEHIND"] {
            by.insert((client.to_owned(), sync), 0);
        }
    }
    for c in s.xds.connections() {
        let sync = match c.sync {
            sextant_xds::server::ProxySync::Current => "CURRENT",
            sextant_xds::server::ProxySync::Behind => "BEHIND",
        };
        *by.entry((c.client.as_str().to_owned(), sync)).or_default() += 1;
    }
    for ((client, sync), n) in by {
        p.sample(
            "sextant_xds_proxies",
            &[("client", &client), ("sync", sync)],
            n,
        );
    }
    p.family(
        "sextant_xds_tcp_connections",
        "gauge",
        "TCP connections open on the xDS port.",
    );
    p.sample(
        "sextant_xds_tcp_connections",
        &[],
        Metrics::get(&m.tcp_connections_active),
    );
    p.counter(
        "sextant_xds_connections_refused_total",
        "xDS connections closed at once because the maximum was open.",
        &m.connections_refused_total,
    );
    p.counter(
        "sextant_xds_handshake_timeouts_total",
        "xDS connections closed because no HTTP/2 preface came within the handshake timeout.",
        &m.handshake_timeouts_total,
    );
    p.counter(
        "sextant_xds_accept_errors_total",
        "Failed accepts on the xDS port (out of file descriptors, for one).",
        &m.accept_errors_total,
    );
    p.counter(
        "sextant_xds_tls_handshake_failures_total",
        "TLS handshakes on the xDS TLS port that failed or timed out.",
        &m.tls_handshake_failures_total,
    );
    p.counter(
        "sextant_xds_tls_reloads_total",
        "Times changed TLS certificate files were loaded.",
        &m.tls_reloads_total,
    );
    p.counter(
        "sextant_xds_tls_reload_failures_total",
        "Times changed TLS certificate files did not load (the previous ones kept serving).",
        &m.tls_reload_failures_total,
    );
    p.counter(
        "sextant_xds_identity_refused_total",
        "xDS streams refused: the node claimed another namespace than its certificate, or proved no identity where one is required.",
        &m.identity_refused_total,
    );
    p.counter(
        "sextant_admin_connections_refused_total",
        "Admin connections closed at once because the maximum was open.",
        &s.listener.refused_total,
    );
    p.counter(
        "sextant_admin_connections_timed_out_total",
        "Admin connections closed idle or at the end of their lifetime.",
        &s.listener.timed_out_total,
    );
    let mut unhonoured: std::collections::BTreeMap<(String, String, &'static str), u64> =
        Default::default();
    for c in s.xds.connections() {
        for u in c.unhonoured {
            let rule = format!("{}/{}", u.rule.namespace, u.rule.name);
            *unhonoured
                .entry((rule, u.feature, u.client.as_str()))
                .or_default() += 1;
        }
    }
    let name = "sextant_xds_rule_features_unhonoured";
    p.family(
        name,
        "gauge",
        "Connected clients that cannot honour a feature of a rule bound to a service they use (the feature is left out of what they receive; /debug/syncz names them).",
    );
    for ((rule, feature, client), n) in &unhonoured {
        p.sample(
            name,
            &[("rule", rule), ("feature", feature), ("client", client)],
            n,
        );
    }
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
        p.family(name, "gauge", help);
        p.sample(name, &[], value);
    }
    p.counter(
        "sextant_xds_connections_total",
        "Connections accepted.",
        &m.connections_total,
    );
    p.per_type(
        "sextant_xds_responses_total",
        "counter",
        "Responses sent.",
        &m.responses_total,
    );
    p.per_type(
        "sextant_xds_resources_sent_total",
        "counter",
        "Resources sent in responses.",
        &m.resources_sent_total,
    );
    p.per_type(
        "sextant_xds_nacks_total",
        "counter",
        "Responses rejected by a client.",
        &m.nacks_total,
    );
    p.counter(
        "sextant_xds_bytes_sent_total",
        "Bytes of responses sent.",
        &m.bytes_sent_total,
    );
    p.counter(
        "sextant_xds_stale_nonces_total",
        "Requests whose nonce was stale.",
        &m.stale_nonces_total,
    );
    p.counter(
        "sextant_xds_unknown_type_requests_total",
        "Requests for types Sextant does not serve.",
        &m.unknown_type_requests_total,
    );
    p.counter(
        "sextant_xds_ack_timeouts_total",
        "Responses never acknowledged within the timeout.",
        &m.ack_timeouts_total,
    );
    p.counter(
        "sextant_xds_plans_computed_total",
        "A connection's next response computed by the connection itself.",
        &m.plans_computed_total,
    );
    p.counter(
        "sextant_xds_plans_shared_total",
        "A connection's next response taken from a connection in the same state.",
        &m.plans_shared_total,
    );
    p.counter(
        "sextant_xds_pushes_total",
        "Snapshots built and pushed (coalesced changes).",
        &m.snapshots_total,
    );
    p.counter(
        "sextant_xds_endpoint_only_pushes_total",
        "Pushes that carried endpoint changes only.",
        &m.endpoint_only_snapshots_total,
    );
    p.counter(
        "sextant_xds_resources_encoded_total",
        "Resources encoded (each once per version).",
        &m.resources_encoded_total,
    );
    p.histogram(
        "sextant_xds_push_latency_seconds",
        "From the first change of a batch to its push.",
        &m.push_latency,
    );
    p.histogram(
        "sextant_xds_ack_latency_seconds",
        "From a response to its ACK or NACK.",
        &m.ack_latency,
    );
    p.family(
        "sextant_xds_convergence_seconds",
        "histogram",
        "Per type: from the first change a response carries reaching the publisher to the client's ACK of it.",
    );
    for t in ResourceType::ALL {
        p.histogram_samples(
            "sextant_xds_convergence_seconds",
            &[("type", t.short())],
            &m.convergence[t.index()],
        );
    }
    for source in &s.sources {
        source.render(&mut p.0);
    }
    p.0
}

/// `services` or `rules`: one registry id may be both (the file registry
/// is), so every per-registry series carries it, or two would collide.
fn kind_label(r: &sextant_aggregate::RegistryStatus) -> &'static str {
    match r.kind {
        sextant_aggregate::SourceKind::Services => "services",
        sextant_aggregate::SourceKind::Rules => "rules",
    }
}
