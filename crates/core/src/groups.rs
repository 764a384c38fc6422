//! Istio's `WorkloadGroup` and auto-registration: a VM's agent connects,
//! names its group, and a `WorkloadEntry` made from the group's template
//! stands for it while it stays connected; once it is gone the entry
//! leaves after a grace period (a restart or a reconnect to another
//! replica keeps it).
//!
//! Where the entry lives is the group's source's business
//! ([`WorkloadGroups`]): the source that holds the group holds the
//! entries registered from it, so a ServiceEntry of that source selects
//! them with the same rules as the entries written there
//! ([`crate::entries::services_from_entries`]). [`Board`] is the in-memory
//! kind, for sources that cannot be written to (registry files; an
//! embedder's own): it keeps the entries in the replica the agent talks
//! to. A source that can be written to (etcd) keeps them there, visible to
//! every replica.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::entries::{WorkloadEntry, WorkloadSpec};
use crate::model::{Health, Labels};

/// The most groups a source keeps (a group is a few hundred bytes).
pub const MAX_GROUPS: usize = 10_000;
/// The most entries a [`Board`] holds: a registration beyond it is
/// refused, and the agent retries.
pub const MAX_REGISTERED: usize = 100_000;

/// Istio's `WorkloadGroup`: the template of the WorkloadEntries its
/// workloads register, and the probe their agents run. Written as its
/// name, namespace and the spec's fields side by side.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadGroup {
    /// The object's name (in a file: required).
    #[serde(default)]
    pub name: String,
    /// Its namespace; `default` when not given.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Labels and annotations every registered entry carries.
    #[serde(default)]
    pub metadata: GroupMetadata,
    /// The entry's spec; `address` is the workload's own and must be
    /// left out.
    #[serde(default)]
    pub template: WorkloadSpec,
    /// How the agent tells whether its workload is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<GroupProbe>,
}

fn default_namespace() -> String {
    "default".into()
}

/// A group's `metadata`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupMetadata {
    /// Labels of every entry (over the template's).
    #[serde(default)]
    pub labels: Labels,
    /// Annotations (kept, not interpreted).
    #[serde(default)]
    pub annotations: Labels,
}

/// A group's readiness probe (Kubernetes' form): one of `httpGet`,
/// `tcpSocket`, `exec`, run by the agent against its own machine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupProbe {
    /// Seconds before the first check.
    #[serde(default)]
    pub initial_delay_seconds: u32,
    /// Seconds a check may take (default 1).
    #[serde(default)]
    pub timeout_seconds: Option<u32>,
    /// Seconds between checks (default 10).
    #[serde(default)]
    pub period_seconds: Option<u32>,
    /// Checks in a row that make an unhealthy workload healthy (default 1).
    #[serde(default)]
    pub success_threshold: Option<u32>,
    /// Checks in a row that make a healthy workload unhealthy (default 3).
    #[serde(default)]
    pub failure_threshold: Option<u32>,
    /// `GET path` on a local port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<HttpGet>,
    /// A TCP connection to a local port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_socket: Option<TcpSocket>,
    /// A command that exits 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Exec>,
}

/// An HTTP probe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpGet {
    /// The path (default `/`).
    #[serde(default)]
    pub path: Option<String>,
    /// The port.
    pub port: u16,
    /// The host (default: the local machine).
    #[serde(default)]
    pub host: Option<String>,
    /// `HTTP` (the only one served).
    #[serde(default)]
    pub scheme: Option<String>,
    /// Headers sent.
    #[serde(default)]
    pub http_headers: Vec<Header>,
}

/// One header of an HTTP probe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Header {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// A TCP probe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSocket {
    /// The port.
    pub port: u16,
    /// The host (default: the local machine).
    #[serde(default)]
    pub host: Option<String>,
}

/// A command probe.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Exec {
    /// The program and its arguments.
    pub command: Vec<String>,
}

impl WorkloadGroup {
    /// How problems name it: `WorkloadGroup NAMESPACE/NAME`.
    pub fn object(&self) -> String {
        format!("WorkloadGroup {}/{}", self.namespace, self.name)
    }

    /// What is wrong with it, if anything (named by field).
    pub fn check(&self) -> Result<(), String> {
        if self.name.is_empty() {
            return Err("the group has no name".into());
        }
        if self.template.address.is_some() {
            return Err(
                "template.address: the address is each workload's own; leave it out".into(),
            );
        }
        if let Some(p) = &self.probe {
            let kinds = [
                p.http_get.is_some(),
                p.tcp_socket.is_some(),
                p.exec.as_ref().is_some_and(|e| !e.command.is_empty()),
            ];
            if kinds.iter().filter(|k| **k).count() != 1 {
                return Err(
                    "probe: exactly one of httpGet, tcpSocket and exec (with a command)".into(),
                );
            }
            if let Some(h) = &p.http_get
                && h.scheme.as_deref().is_some_and(|s| s != "HTTP")
            {
                return Err("probe.httpGet.scheme: only HTTP is served".into());
            }
        }
        Ok(())
    }

    /// The labels of its workloads: the group's over the template's.
    pub fn labels(&self) -> Labels {
        let mut labels = self.template.labels.clone();
        labels.extend(
            self.metadata
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        labels
    }

    /// The entry a workload of this group at `address` registers: the
    /// template with the address, the group's labels over the
    /// template's, and the network the workload names (else the
    /// template's). Its name is Istio's: `GROUP-ADDRESS[-NETWORK]`, dots
    /// and colons as dashes. A group with a probe registers its workloads
    /// unhealthy until their agent reports a passing probe.
    pub fn entry_for(&self, address: IpAddr, network: Option<&str>) -> WorkloadEntry {
        let mut spec = self.template.clone();
        spec.address = Some(address.to_string());
        spec.labels = self.labels();
        if let Some(n) = network.filter(|n| !n.is_empty()) {
            spec.network = Some(n.to_owned());
        }
        let mut name = format!("{}-{address}", self.name);
        if let Some(n) = spec.network.as_deref().filter(|n| !n.is_empty()) {
            name.push('-');
            name.push_str(n);
        }
        let name = name.replace(['.', ':'], "-");
        WorkloadEntry {
            name,
            namespace: self.namespace.clone(),
            spec,
            health: if self.probe.is_some() {
                Health::Unhealthy
            } else {
                Health::Healthy
            },
        }
    }
}

/// A registered entry, held for as long as this value lives. Dropped,
/// the entry leaves after the grace period given when it was held,
/// unless it is held again meanwhile (the workload reconnected).
pub trait HeldEntry: Send + Sync {
    /// The workload's agent reported its probe's outcome.
    fn set_health(&self, health: Health);
}

/// A source of WorkloadGroups that keeps the entries registered from
/// them (see the module's text).
pub trait WorkloadGroups: Send + Sync {
    /// The group `namespace/name`, if this source has it.
    fn group(&self, namespace: &str, name: &str) -> Option<WorkloadGroup>;

    /// Registers `entry` (made by [`WorkloadGroup::entry_for`] from
    /// `group`, one of this source's groups) until the returned value is
    /// dropped and `grace` has passed. `Err` says why it cannot be kept.
    fn hold(
        &self,
        group: &WorkloadGroup,
        entry: WorkloadEntry,
        grace: Duration,
    ) -> Result<Box<dyn HeldEntry>, String>;
}

/// The WorkloadGroups a source read last, by namespace and name (the
/// first [`MAX_GROUPS`]): set on each read, looked up by registrations.
#[derive(Default)]
pub struct GroupIndex(Mutex<BTreeMap<(String, String), WorkloadGroup>>);

impl GroupIndex {
    /// The groups now.
    pub fn set(&self, groups: impl IntoIterator<Item = WorkloadGroup>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = groups
            .into_iter()
            .take(MAX_GROUPS)
            .map(|g| ((g.namespace.clone(), g.name.clone()), g))
            .collect();
    }

    /// The group `namespace/name`, if there is one.
    pub fn get(&self, namespace: &str, name: &str) -> Option<WorkloadGroup> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }
}

/// A held entry kept by a task of the source's: the entry (its health
/// moved by the agent's reports) on a watch the task follows, and a
/// signal that closes when the hold is dropped.
pub struct WatchedHold {
    doc: watch::Sender<WorkloadEntry>,
    _stop: watch::Sender<bool>,
}

/// What the keeping task follows: the entry as it moves, and the hold's
/// end (`changed()` fails once the hold is dropped).
pub type Followed = (watch::Receiver<WorkloadEntry>, watch::Receiver<bool>);

impl WatchedHold {
    /// A hold of `entry`, and what its keeping task follows.
    pub fn start(entry: WorkloadEntry) -> (Box<dyn HeldEntry>, Followed) {
        let (doc, docs) = watch::channel(entry);
        let (stop, stopped) = watch::channel(false);
        (Box::new(WatchedHold { doc, _stop: stop }), (docs, stopped))
    }
}

impl HeldEntry for WatchedHold {
    fn set_health(&self, health: Health) {
        self.doc.send_if_modified(|e| {
            let moved = e.health != health;
            e.health = health;
            moved
        });
    }
}

/// The in-memory [`WorkloadGroups`]: a source hands it its groups
/// ([`Board::set_groups`]) and reads the entries registered
/// ([`Board::entries`]) whenever [`Board::changes`] moves.
#[derive(Default)]
pub struct Board {
    groups: GroupIndex,
    state: Mutex<BoardState>,
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct BoardState {
    entries: BTreeMap<(String, String), Slot>,
}

/// One registered entry: how many hold it, and which holding is the
/// newest (a grace period that ends after a newer holding began removes
/// nothing).
struct Slot {
    entry: WorkloadEntry,
    holders: u32,
    generation: u64,
}

impl Board {
    /// An empty board.
    pub fn new() -> Arc<Board> {
        Arc::new(Board::default())
    }

    /// The source's groups now (the first [`MAX_GROUPS`]). Entries
    /// already registered stay until their workloads leave.
    pub fn set_groups(&self, groups: impl IntoIterator<Item = WorkloadGroup>) {
        self.groups.set(groups);
    }

    /// The entries registered now, by namespace and name.
    pub fn entries(&self) -> Vec<WorkloadEntry> {
        self.lock()
            .entries
            .values()
            .map(|s| s.entry.clone())
            .collect()
    }

    /// Moves whenever the registered entries change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BoardState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }
}

impl WorkloadGroups for Arc<Board> {
    fn group(&self, namespace: &str, name: &str) -> Option<WorkloadGroup> {
        self.groups.get(namespace, name)
    }

    fn hold(
        &self,
        _group: &WorkloadGroup,
        entry: WorkloadEntry,
        grace: Duration,
    ) -> Result<Box<dyn HeldEntry>, String> {
        let key = (entry.namespace.clone(), entry.name.clone());
        let generation = {
            let mut st = self.lock();
            let len = st.entries.len();
            match st.entries.get_mut(&key) {
                Some(slot) => {
                    slot.holders += 1;
                    slot.generation += 1;
                    // A workload back within its grace period keeps the
                    // health it reported; its template may have moved.
                    let health = slot.entry.health;
                    slot.entry = WorkloadEntry { health, ..entry };
                    slot.generation
                }
                None if len >= MAX_REGISTERED => {
                    return Err(format!("{MAX_REGISTERED} workloads are registered already"));
                }
                None => {
                    st.entries.insert(
                        key.clone(),
                        Slot {
                            entry,
                            holders: 1,
                            generation: 0,
                        },
                    );
                    0
                }
            }
        };
        self.bump();
        Ok(Box::new(BoardHold {
            board: Arc::clone(self),
            key,
            generation,
            grace,
        }))
    }
}

struct BoardHold {
    board: Arc<Board>,
    key: (String, String),
    generation: u64,
    grace: Duration,
}

impl HeldEntry for BoardHold {
    fn set_health(&self, health: Health) {
        let moved = {
            let mut st = self.board.lock();
            match st.entries.get_mut(&self.key) {
                Some(slot) if slot.generation == self.generation && slot.entry.health != health => {
                    slot.entry.health = health;
                    true
                }
                _ => false,
            }
        };
        if moved {
            self.board.bump();
        }
    }
}

impl Drop for BoardHold {
    fn drop(&mut self) {
        let generation = {
            let mut st = self.board.lock();
            let Some(slot) = st.entries.get_mut(&self.key) else {
                return;
            };
            slot.holders = slot.holders.saturating_sub(1);
            if slot.holders > 0 {
                return;
            }
            slot.generation
        };
        let board = Arc::clone(&self.board);
        let key = self.key.clone();
        let grace = self.grace;
        let leave = async move {
            tokio::time::sleep(grace).await;
            let gone = {
                let mut st = board.lock();
                match st.entries.get(&key) {
                    Some(slot) if slot.holders == 0 && slot.generation == generation => {
                        st.entries.remove(&key);
                        true
                    }
                    _ => false,
                }
            };
            if gone {
                board.bump();
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(leave);
            }
            // No runtime left (the process is ending): nothing to serve.
            Err(_) => {
                self.board.lock().entries.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(yaml: &str) -> WorkloadGroup {
        serde_yaml_ng::from_str(yaml).expect("a group")
    }

    #[test]
    fn an_entry_is_the_template_with_the_workloads_address_and_istios_name() {
        let g = group(
            "{ name: cart, namespace: shop, metadata: { labels: { app: cart } }, template: { ports: { http: 8080 }, serviceAccount: cart, labels: { version: v1 } } }",
        );
        g.check().expect("valid");
        let e = g.entry_for("10.0.0.7".parse().expect("ip"), Some("vm-net"));
        assert_eq!(e.name, "cart-10-0-0-7-vm-net");
        assert_eq!(e.namespace, "shop");
        assert_eq!(e.spec.address.as_deref(), Some("10.0.0.7"));
        assert_eq!(e.spec.labels.get("app").map(String::as_str), Some("cart"));
        assert_eq!(e.spec.labels.get("version").map(String::as_str), Some("v1"));
        assert_eq!(e.spec.network.as_deref(), Some("vm-net"));
        assert_eq!(e.spec.ports.get("http"), Some(&8080));
        assert_eq!(e.health, Health::Healthy, "no probe: healthy at once");
        let v6 = g.entry_for("fd00::7".parse().expect("ip"), None);
        assert_eq!(v6.name, "cart-fd00--7");
    }

    #[test]
    fn a_group_with_a_probe_registers_unhealthy_and_bad_groups_are_named() {
        let g = group("{ name: db, probe: { tcpSocket: { port: 5432 } } }");
        g.check().expect("valid");
        assert_eq!(
            g.entry_for("10.0.0.1".parse().expect("ip"), None).health,
            Health::Unhealthy
        );
        for (yaml, want) in [
            (
                "{ name: x, template: { address: 10.0.0.1 } }",
                "template.address",
            ),
            ("{ name: x, probe: {} }", "exactly one"),
            (
                "{ name: x, probe: { tcpSocket: { port: 1 }, exec: { command: [true] } } }",
                "exactly one",
            ),
            (
                "{ name: x, probe: { httpGet: { port: 1, scheme: HTTPS } } }",
                "only HTTP",
            ),
            ("{ namespace: x }", "no name"),
        ] {
            let e = group(yaml).check().expect_err(yaml);
            assert!(e.contains(want), "{yaml}: {e}");
        }
        assert!(
            serde_yaml_ng::from_str::<WorkloadGroup>("{ name: x, tempalte: {} }").is_err(),
            "unknown fields are refused"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_stays_while_held_and_leaves_after_the_grace_period() {
        let board = Board::new();
        board.set_groups([group("{ name: cart, namespace: shop }")]);
        let g = board.group("shop", "cart").expect("the group");
        assert!(board.group("other", "cart").is_none(), "by namespace");
        let mut changes = board.changes();
        let entry = g.entry_for("10.0.0.7".parse().expect("ip"), None);
        let grace = Duration::from_secs(10);

        let held = board.hold(&g, entry.clone(), grace).expect("held");
        assert!(changes.has_changed().expect("open"));
        changes.mark_unchanged();
        assert_eq!(board.entries(), vec![entry.clone()]);
        held.set_health(Health::Unhealthy);
        assert_eq!(board.entries()[0].health, Health::Unhealthy);
        assert!(changes.has_changed().expect("open"));

        // Gone, then back within the grace period (a reconnect): the
        // entry never left and keeps its health.
        drop(held);
        tokio::time::sleep(Duration::from_secs(5)).await;
        let back = board.hold(&g, entry.clone(), grace).expect("held");
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(
            board.entries().len(),
            1,
            "held again before the grace ran out"
        );
        assert_eq!(board.entries()[0].health, Health::Unhealthy);

        // Two streams hold it (two replicas' worth of reconnects): the
        // entry stays until the last is gone, then for the grace period.
        let second = board.hold(&g, entry, grace).expect("held");
        drop(back);
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(board.entries().len(), 1, "one holder left");
        drop(second);
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert_eq!(board.entries().len(), 1, "within the grace period");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(board.entries().is_empty(), "gone after the grace period");
    }
}
