//! Sextant's own DNS resolution, wired in: every registry behind one
//! resolver (`sextant-dns`), its counters on `/metrics` and its names on
//! `/debug/dnsz`.

use std::sync::Arc;

use sextant_core::Registry;
use sextant_dns::{Resolver, Settings};

use crate::admin;

/// Puts every registry behind one resolver.
pub(crate) fn wrap(
    settings: Settings,
    registries: Vec<Arc<dyn Registry>>,
) -> anyhow::Result<(Resolver, Vec<Arc<dyn Registry>>)> {
    let resolver = Resolver::new(settings).map_err(|e| anyhow::anyhow!("DNS resolution: {e}"))?;
    let wrapped = registries
        .into_iter()
        .map(|r| Arc::new(resolver.wrap(r)) as Arc<dyn Registry>)
        .collect();
    Ok((resolver, wrapped))
}

/// The resolver's counters on `/metrics`.
pub(crate) struct DnsMetrics(pub Resolver);

impl std::fmt::Debug for DnsMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DnsMetrics")
    }
}

impl admin::Collector for DnsMetrics {
    fn encode(
        &self,
        encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        let counts = self.0.counts();
        let mut p = admin::Families::new(encoder);
        p.counters(
            "sextant_dns_queries_total",
            "DNS queries Sextant made for services' names, by outcome (a failed one keeps the last good answer).",
            [("answered", counts.answered), ("failed", counts.failed)]
                .map(|(outcome, v)| (vec![("outcome", outcome.to_owned())], v)),
        )?;
        p.gauge(
            "sextant_dns_names",
            "DNS names Sextant follows for services' endpoints.",
            i64::try_from(counts.names).unwrap_or(i64::MAX),
        )
    }
}
