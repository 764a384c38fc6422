//! One name followed: asked, its answer kept until its TTL runs out,
//! asked again; a failure keeps the last good answer and is retried with
//! backoff.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use sextant_core::Hostname;

use crate::Shared;

/// Follows `name` until the task is aborted or the resolver is gone.
pub(crate) async fn follow(shared: Weak<Shared>, name: Hostname) {
    let mut failures: u32 = 0;
    loop {
        let Some(s) = shared.upgrade() else {
            return;
        };
        let settings = s.settings.clone();
        // Absolute: search domains would multiply the queries.
        let fqdn = format!("{}.", name.as_str());
        let asked = tokio::time::timeout(settings.timeout * 2, s.lookup.lookup_ip(fqdn)).await;
        let outcome: Result<(Vec<IpAddr>, Duration), String> = match asked {
            Ok(Ok(lookup)) => {
                let mut ips: Vec<IpAddr> = lookup.iter().collect();
                ips.sort();
                ips.dedup();
                let ttl = lookup
                    .valid_until()
                    .saturating_duration_since(Instant::now())
                    .clamp(settings.min_ttl, settings.max_ttl);
                if ips.is_empty() {
                    Err("no address in the answer".to_owned())
                } else {
                    Ok((ips, ttl))
                }
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", settings.timeout * 2)),
        };
        let wait = match outcome {
            Ok((ips, ttl)) => {
                s.queries.fetch_add(1, Ordering::Relaxed);
                failures = 0;
                let mut names = s.lock();
                let Some(n) = names.get_mut(&name) else {
                    return;
                };
                let moved = n.answer.as_deref() != Some(ips.as_slice()) || !n.settled;
                if n.error.take().is_some() {
                    tracing::info!(%name, addresses = ips.len(), "DNS name answers again");
                }
                n.answer = Some(Arc::from(ips));
                n.settled = true;
                n.next = Some(Instant::now() + ttl);
                drop(names);
                if moved {
                    s.changed.send_modify(|g| *g += 1);
                }
                ttl
            }
            Err(error) => {
                s.failures.fetch_add(1, Ordering::Relaxed);
                failures = failures.saturating_add(1);
                // retry, doubled at each failure, at most 30 s (or max_ttl).
                let backoff = settings
                    .retry
                    .saturating_mul(1 << (failures - 1).min(16))
                    .min(settings.max_ttl.min(Duration::from_secs(30)));
                let mut names = s.lock();
                let Some(n) = names.get_mut(&name) else {
                    return;
                };
                if n.error.is_none() {
                    tracing::warn!(%name, %error, kept = n.answer.as_ref().map_or(0, |a| a.len()), "DNS query failed; the last good answer is kept");
                }
                let first = !n.settled;
                n.error = Some(error);
                n.settled = true;
                n.next = Some(Instant::now() + backoff);
                drop(names);
                if first {
                    s.changed.send_modify(|g| *g += 1);
                }
                backoff
            }
        };
        drop(s);
        tokio::time::sleep(wait).await;
    }
}
