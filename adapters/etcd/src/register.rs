//! Keeping one instance registered: what `sextant etcd register` does.

use std::time::Duration;

use sextant_core::{Endpoint, Error, Service};
use tracing::{info, warn};

use crate::EtcdConfig;

/// One instance to keep registered.
#[derive(Clone, Debug)]
pub struct Registration {
    /// The service it belongs to; its document is written if none exists
    /// (without a lease: the service outlives its instances).
    pub service: Service,
    /// The instance; written under `endpoints/HOSTNAME/ID` with a lease.
    pub endpoint: Endpoint,
    /// The key's last part; default `ADDRESS-PORT...`.
    pub id: String,
    /// Lease time to live: how long the endpoint outlives a crash.
    pub ttl: Duration,
}

impl Registration {
    /// The endpoint's key under `prefix`.
    pub fn endpoint_key(&self, prefix: &str) -> String {
        format!("{prefix}endpoints/{}/{}", self.service.hostname, self.id)
    }

    /// The service document's key under `prefix`.
    pub fn service_key(&self, prefix: &str) -> String {
        format!("{prefix}services/{}", self.service.hostname)
    }
}

fn failed(what: &str) -> impl Fn(tonic::Status) -> Error + '_ {
    move |e| Error::unavailable_from(format!("etcd {what} failed"), e)
}

/// Writes the registration and keeps its lease alive until `stop`
/// completes, then revokes the lease so the endpoint goes at once. If etcd
/// is lost, registers again with a new lease when it is back.
pub async fn run(
    config: &EtcdConfig,
    reg: &Registration,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    tokio::pin!(stop);
    let mut backoff = config.backoff.delays();
    let current: std::sync::Mutex<Option<(crate::client::Client, i64)>> =
        std::sync::Mutex::new(None);
    loop {
        let attempt = keep_registered(config, reg, &current);
        tokio::pin!(attempt);
        let stopped = tokio::select! {
            () = &mut stop => true,
            result = &mut attempt => {
                let e = match result { Ok(never) => match never {}, Err(e) => e };
                let delay = backoff.next_delay();
                warn!(error = %e.chain(), retry_ms = delay.as_millis() as u64, "registration lost; registering again");
                tokio::select! {
                    () = &mut stop => true,
                    () = tokio::time::sleep(delay) => false,
                }
            }
        };
        if stopped {
            let held = current.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some((mut client, lease)) = held {
                // Revoking removes the endpoint now rather than after the TTL.
                match tokio::time::timeout(config.timeout, client.lease_revoke(lease)).await {
                    Ok(Ok(_)) => info!(lease, "deregistered"),
                    _ => warn!(
                        lease,
                        "could not revoke the lease; the endpoint goes when it expires"
                    ),
                }
            }
            return Ok(());
        }
    }
}

enum Never {}

async fn keep_registered(
    config: &EtcdConfig,
    reg: &Registration,
    current: &std::sync::Mutex<Option<(crate::client::Client, i64)>>,
) -> Result<Never, Error> {
    let mut client = config.connect().await?;
    let service_key = reg.service_key(&config.prefix);
    let existing = client
        .get(service_key.as_str(), false, None, false)
        .await
        .map_err(failed("read"))?;
    if existing.kvs().is_empty() {
        let doc = Service {
            endpoints: Vec::new(),
            ..reg.service.clone()
        };
        let json = serde_json::to_string(&doc)
            .map_err(|e| Error::unavailable(format!("cannot encode service: {e}")))?;
        client
            .put(service_key.as_str(), json, 0)
            .await
            .map_err(failed("write"))?;
    }
    let ttl = i64::try_from(reg.ttl.as_secs().max(1)).unwrap_or(i64::MAX);
    let lease = client
        .lease_grant(ttl)
        .await
        .map_err(failed("lease grant"))?;
    let json = serde_json::to_string(&reg.endpoint)
        .map_err(|e| Error::unavailable(format!("cannot encode endpoint: {e}")))?;
    let key = reg.endpoint_key(&config.prefix);
    client
        .put(key.as_str(), json, lease)
        .await
        .map_err(failed("write"))?;
    info!(%key, lease, ttl_s = ttl, "registered");
    *current.lock().unwrap_or_else(|p| p.into_inner()) = Some((client.clone(), lease));
    let (mut keeper, mut responses) = client
        .lease_keep_alive(lease)
        .await
        .map_err(failed("keep-alive"))?;
    let every = (reg.ttl / 3).max(Duration::from_millis(500));
    // The first keep-alive went with the stream; each turn reads its
    // answer, waits, and sends the next.
    loop {
        match responses.message().await.map_err(failed("keep-alive"))? {
            Some(r) if r.ttl() > 0 => {}
            _ => return Err(Error::unavailable("lease expired")),
        }
        tokio::time::sleep(every).await;
        keeper.keep_alive().await.map_err(failed("keep-alive"))?;
    }
}
