//! Counters and histograms of the publisher and the ADS server, read by
//! the admin server's `/metrics`. Both layers count into it; it imports
//! neither, so translation does not depend on serving.

use std::sync::atomic::{AtomicU64, Ordering};

/// A latency histogram, in seconds (buckets [`LATENCY_BOUNDS`]): the
/// Prometheus client crate's own, which `/metrics` encodes.
#[derive(Debug, Clone)]
pub struct Histogram(prometheus_client::metrics::histogram::Histogram);

/// Bucket bounds for latencies: 1 ms to 10 s.
pub const LATENCY_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Default for Histogram {
    fn default() -> Self {
        Histogram(prometheus_client::metrics::histogram::Histogram::new(
            LATENCY_BOUNDS.iter().copied(),
        ))
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        self.0.observe(d.as_secs_f64());
    }

    /// The metric, to encode.
    pub fn metric(&self) -> &prometheus_client::metrics::histogram::Histogram {
        &self.0
    }
}

/// Counters, read by the admin server's `/metrics`.
#[derive(Default, Debug)]
pub struct Metrics {
    /// Connections open now.
    pub connections_active: AtomicU64,
    /// Connections ever accepted.
    pub connections_total: AtomicU64,
    /// TCP connections open now (each may carry several streams).
    pub tcp_connections_active: AtomicU64,
    /// TCP connections closed at once because the maximum was open.
    pub connections_refused_total: AtomicU64,
    /// TCP connections closed because no HTTP/2 preface came in time.
    pub handshake_timeouts_total: AtomicU64,
    /// Failed accepts (out of file descriptors, for one).
    pub accept_errors_total: AtomicU64,
    /// TLS handshakes that failed or timed out on the TLS port.
    pub tls_handshake_failures_total: AtomicU64,
    /// Times changed TLS files were loaded.
    pub tls_reloads_total: AtomicU64,
    /// Times changed TLS files did not load (the previous ones kept serving).
    pub tls_reload_failures_total: AtomicU64,
    /// Streams refused because the node's claim does not match the
    /// identity the connection proved, or no identity was proved.
    pub identity_refused_total: AtomicU64,
    /// Workloads registered from a WorkloadGroup by a stream open now.
    pub workloads_registered: AtomicU64,
    /// Streams that named a WorkloadGroup and were refused.
    pub workload_registrations_refused_total: AtomicU64,
    /// Responses sent, per type (index: [`ResourceType::index`]).
    pub responses_total: [AtomicU64; crate::resource::ResourceType::COUNT],
    /// Resources sent, per type.
    pub resources_sent_total: [AtomicU64; crate::resource::ResourceType::COUNT],
    /// Bytes of responses sent.
    pub bytes_sent_total: AtomicU64,
    /// NACKs received, per type.
    pub nacks_total: [AtomicU64; crate::resource::ResourceType::COUNT],
    /// Requests ignored for ACK purposes because their nonce was stale.
    pub stale_nonces_total: AtomicU64,
    /// Requests for a type Sextant does not serve.
    pub unknown_type_requests_total: AtomicU64,
    /// Responses never acknowledged within the ACK timeout.
    pub ack_timeouts_total: AtomicU64,
    /// Snapshots built (one per coalesced push).
    pub snapshots_total: AtomicU64,
    /// Snapshots that carried endpoint changes only (the fast path).
    pub endpoint_only_snapshots_total: AtomicU64,
    /// Resources encoded while building snapshots.
    pub resources_encoded_total: AtomicU64,
    /// A connection's next step computed by the connection itself.
    pub plans_computed_total: AtomicU64,
    /// A connection's next step taken from another connection in the same
    /// state (the shared-plan cache; see ARCHITECTURE.md).
    pub plans_shared_total: AtomicU64,
    /// From the first change of a batch to its snapshot being published.
    pub push_latency: Histogram,
    /// From a response being sent to its ACK or NACK.
    pub ack_latency: Histogram,
    /// Per type: from the first change a response carries reaching the
    /// publisher to the client's ACK of it (Istio's convergence time).
    pub convergence: [Histogram; crate::resource::ResourceType::COUNT],
    /// Per type: from the first change a response carries reaching the
    /// publisher to the response being sent (the server's share of it).
    pub sent_after_change: [Histogram; crate::resource::ResourceType::COUNT],
    /// Where pushes and NACKs are recorded for `/debug/events` (give it
    /// the aggregator's journal: one sequence for everything).
    pub journal: std::sync::Arc<sextant_core::journal::Journal>,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
