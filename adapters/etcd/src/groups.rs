//! WorkloadGroups from etcd, and the entries VMs register from them
//! (see `sextant_core::groups`), kept in etcd where every replica reads
//! them.
//!
//! A registered entry is the document `PREFIX workloadentries/NS/NAME`
//! on a lease whose time to live is the grace period: the replica holding
//! the VM's stream keeps the lease alive, a health change writes the
//! document again on the same lease, and once the stream is gone the
//! keep-alives stop and etcd deletes the key when the lease runs out. A
//! replica that dies takes its keep-alives with it, so the entry cannot
//! outlive both the VM's stream and the grace period. A VM back within
//! the grace period (on any replica) writes the key on a lease of its
//! own; the old lease runs out with nothing attached. Two holders of one
//! entry (a VM with streams on two replicas) each check at every
//! keep-alive that the key is there and write it again if not: the key
//! rides the lease of the last writer, and when that one stops the other
//! puts it back within a third of the grace period.

use std::sync::Arc;
use std::time::Duration;

use sextant_core::entries::WorkloadEntry;
use sextant_core::groups::{GroupIndex, HeldEntry, WatchedHold, WorkloadGroup, WorkloadGroups};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::EtcdConfig;
use crate::client::Client;
use crate::convert::EntryKey;

/// The groups an etcd registry read, and where to keep registered
/// entries (`EtcdRegistry::workload_groups`).
pub struct EtcdGroups {
    config: EtcdConfig,
    /// The groups read now (the registry's watch sets them after each
    /// read that may have moved them).
    pub(crate) groups: GroupIndex,
    /// One connection for every entry held (leases and their keep-alives
    /// share it, as gRPC multiplexes them), not one per VM.
    client: Arc<SharedClient>,
}

/// A connection made on first use and made again after a failure.
#[derive(Default)]
struct SharedClient(tokio::sync::Mutex<Option<Client>>);

impl SharedClient {
    async fn get(&self, config: &EtcdConfig) -> Result<Client, String> {
        let mut held = self.0.lock().await;
        if let Some(c) = held.as_ref() {
            return Ok(c.clone());
        }
        let c = config.connect().await.map_err(|e| e.chain())?;
        *held = Some(c.clone());
        Ok(c)
    }

    /// After a failure: the next holder connects again.
    async fn forget(&self) {
        *self.0.lock().await = None;
    }
}

impl EtcdGroups {
    pub(crate) fn new(config: EtcdConfig) -> Arc<EtcdGroups> {
        Arc::new(EtcdGroups {
            config,
            groups: GroupIndex::default(),
            client: Arc::default(),
        })
    }
}

impl WorkloadGroups for EtcdGroups {
    fn group(&self, namespace: &str, name: &str) -> Option<WorkloadGroup> {
        self.groups.get(namespace, name)
    }

    fn hold(
        &self,
        _group: &WorkloadGroup,
        entry: WorkloadEntry,
        grace: Duration,
    ) -> Result<Box<dyn HeldEntry>, String> {
        let key = self.config.layout().entry_key(&EntryKey::Workload(
            entry.namespace.clone(),
            entry.name.clone(),
        ));
        let (held, (docs, stopped)) = WatchedHold::start(entry);
        let (config, client) = (self.config.clone(), Arc::clone(&self.client));
        tokio::spawn(async move { keep(&config, &client, &key, grace, docs, stopped).await });
        Ok(held)
    }
}

/// Writes the entry and keeps it alive until `stopped` closes; etcd lost,
/// it starts over with a new lease when it is back.
async fn keep(
    config: &EtcdConfig,
    client: &SharedClient,
    key: &str,
    grace: Duration,
    mut docs: watch::Receiver<WorkloadEntry>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut backoff = config.backoff.delays();
    loop {
        // The hold ends itself when the holder is gone (after its last
        // keep-alive), or on an error.
        let held = hold(config, client, key, grace, &mut docs).await;
        if held == STOPPED || stopped.has_changed().is_err() || *stopped.borrow() {
            return;
        }
        client.forget().await;
        let delay = backoff.next_delay();
        warn!(%key, error = %held, retry_ms = delay.as_millis() as u64, "cannot keep the registered entry in etcd; trying again");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stopped.changed() => return,
        }
    }
}

/// What [`hold`] returns when the holder is gone.
const STOPPED: &str = "stopped";

/// One lease: granted, the document written on it, kept alive and
/// written again when it moves, until an error or the holder's end.
async fn hold(
    config: &EtcdConfig,
    client: &SharedClient,
    key: &str,
    grace: Duration,
    docs: &mut watch::Receiver<WorkloadEntry>,
) -> String {
    let failed = |what: &str, e: tonic::Status| format!("etcd {what}: {e}");
    let mut client = match client.get(config).await {
        Ok(c) => c,
        Err(e) => return e,
    };
    // Whole seconds, at least etcd's practical minimum.
    let ttl = i64::try_from(grace.as_secs_f64().ceil() as u64)
        .unwrap_or(i64::MAX)
        .max(2);
    let lease = match client.lease_grant(ttl).await {
        Ok(l) => l,
        Err(e) => return failed("lease grant", e),
    };
    let write = |doc: &WorkloadEntry| serde_json::to_string(doc).unwrap_or_default();
    let doc = write(&docs.borrow_and_update());
    if let Err(e) = client.put(key, doc, lease).await {
        return failed("write", e);
    }
    info!(%key, lease, ttl_s = ttl, "registered entry written");
    let (mut keeper, mut answers) = match client.lease_keep_alive(lease).await {
        Ok(k) => k,
        Err(e) => return failed("keep-alive", e),
    };
    let every = Duration::from_secs_f64(ttl as f64 / 3.0);
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            answer = answers.message() => match answer {
                Ok(Some(a)) if a.ttl() > 0 => {}
                Ok(_) => return "the lease expired".into(),
                Err(e) => return failed("keep-alive", e),
            },
            _ = tick.tick() => {
                if let Err(e) = keeper.keep_alive().await {
                    return failed("keep-alive", e);
                }
                // Gone while held: another holder's lease carried it and
                // ran out. Written again on ours.
                match client.get(key, false, None, true).await {
                    Ok(r) if r.count() > 0 => {}
                    Ok(_) => {
                        let doc = write(&docs.borrow());
                        if let Err(e) = client.put(key, doc, lease).await {
                            return failed("write", e);
                        }
                    }
                    Err(e) => return failed("read", e),
                }
            }
            changed = docs.changed() => {
                if changed.is_err() {
                    // The holder is gone: one last keep-alive, answered, so
                    // that the entry outlives the stream by the whole grace
                    // period (not what is left since the last tick). Then
                    // the lease runs out on its own.
                    if keeper.keep_alive().await.is_ok() {
                        let _ = tokio::time::timeout(grace, answers.message()).await;
                    }
                    return STOPPED.into();
                }
                let doc = write(&docs.borrow_and_update());
                if let Err(e) = client.put(key, doc, lease).await {
                    return failed("write", e);
                }
            }
        }
    }
}
