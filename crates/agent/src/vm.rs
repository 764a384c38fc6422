//! A workload outside Kubernetes (a VM): `sextant agent --workload-group
//! FILE` registers it from the WorkloadGroup in FILE (Istio's
//! auto-registration) and reports its health from the group's probe.
//!
//! - The group file is the one applied to the control plane: a Kubernetes
//!   manifest (`kind: WorkloadGroup`) or the registry files' form (name,
//!   namespace and the spec's fields side by side). The agent reads its
//!   name, namespace, labels, service account and probe; the template the
//!   entry is made from is the control plane's copy.
//! - The agent holds an xDS stream of its own to Sextant, its node naming
//!   the group (`AUTO_REGISTER_GROUP`), the namespace and the address
//!   (`INSTANCE_IP`), authenticated as Envoy's is (TLS, the token). The
//!   entry lives while the stream does; a broken stream is opened again
//!   with backoff, with the next `--xds-addr` (replicas in turn), within
//!   the control plane's grace period as long as one can be reached.
//! - On that stream it reports the probe's outcome (Istio's health type:
//!   healthy, or unhealthy with why), on every change and when the stream
//!   opens. A group without a probe reports healthy.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc::Status;
use sextant_core::groups::{GroupProbe, WorkloadGroup};
use sextant_xds::server::register::HEALTH_TYPE_URL;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::AgentArgs;
use crate::pod::PodInfo;

/// The largest group file read.
const MAX_GROUP_BYTES: u64 = 256 << 10;
/// The longest wait between two attempts to open the stream.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Reads the WorkloadGroup in `path` (see the module's text).
pub fn read_group(path: &Path) -> Result<WorkloadGroup, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_GROUP_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if text.len() as u64 > MAX_GROUP_BYTES {
        return Err(format!(
            "{}: larger than {MAX_GROUP_BYTES} bytes",
            path.display()
        ));
    }
    parse_group(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A group from its text: a manifest or the flat form.
fn parse_group(text: &str) -> Result<WorkloadGroup, String> {
    let doc: serde_json::Value = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let group: WorkloadGroup = if doc.get("kind").is_some() {
        if doc["kind"] != "WorkloadGroup" {
            return Err(format!("kind {} is not WorkloadGroup", doc["kind"]));
        }
        let mut flat = doc
            .get("spec")
            .cloned()
            .unwrap_or_else(|| serde_json::json!({}));
        let Some(fields) = flat.as_object_mut() else {
            return Err("spec is not a mapping".into());
        };
        for key in ["name", "namespace"] {
            if let Some(v) = doc["metadata"].get(key) {
                fields.insert(key.into(), v.clone());
            }
        }
        serde_json::from_value(flat).map_err(|e| e.to_string())?
    } else {
        serde_json::from_value(doc).map_err(|e| e.to_string())?
    };
    group.check()?;
    Ok(group)
}

/// What the group says of the workload, where the environment said
/// nothing: its namespace, its labels (the group's over the template's)
/// and its service account.
pub fn fill_pod(pod: &mut PodInfo, group: &WorkloadGroup) {
    if pod.namespace.is_none() {
        pod.namespace = Some(group.namespace.clone());
    }
    for (k, v) in group.labels() {
        pod.labels.entry(k).or_insert(v);
    }
    if pod.service_account.is_none() {
        pod.service_account = group.template.service_account.clone();
    }
}

/// What the probe checks: the application, as a pod's probes do
/// (`probes.rs`), or a command.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Check {
    App(crate::probes::Check),
    Exec { command: Vec<String> },
}

/// The group's probe, ready to run against this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    check: Check,
    initial_delay: Duration,
    timeout: Duration,
    period: Duration,
    success_threshold: u32,
    failure_threshold: u32,
}

/// Only the local machine is probed (the probe is the workload's own).
fn local(host: Option<&str>) -> Result<(), String> {
    match host {
        None | Some("" | "localhost" | "127.0.0.1" | "::1") => Ok(()),
        Some(h) => Err(format!("host {h:?}: the agent probes its own machine only")),
    }
}

impl Probe {
    /// The probe `p` describes, bounded (timeout 1 to 60 s, period 1 s to
    /// 5 min).
    pub fn new(p: &GroupProbe) -> Result<Probe, String> {
        let check = if let Some(h) = &p.http_get {
            local(h.host.as_deref())?;
            let path = h.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || path.chars().any(|c| c.is_control() || c == ' ') {
                return Err(format!("probe path {path:?} is not a request path"));
            }
            let headers = h
                .http_headers
                .iter()
                .take(16)
                .map(|x| {
                    if x.name.is_empty()
                        || x.name.contains(':')
                        || (x.name.clone() + &x.value).chars().any(char::is_control)
                    {
                        Err(format!("header {:?} is not a header", x.name))
                    } else {
                        Ok((x.name.clone(), x.value.clone()))
                    }
                })
                .collect::<Result<_, _>>()?;
            Check::App(crate::probes::Check::Http {
                port: h.port,
                path,
                headers,
            })
        } else if let Some(t) = &p.tcp_socket {
            local(t.host.as_deref())?;
            Check::App(crate::probes::Check::Tcp { port: t.port })
        } else if let Some(e) = p.exec.as_ref().filter(|e| !e.command.is_empty()) {
            Check::Exec {
                command: e.command.clone(),
            }
        } else {
            return Err("the probe has neither httpGet, tcpSocket nor exec".into());
        };
        let secs = |v: Option<u32>, default: u64, max: u64| {
            Duration::from_secs(v.map_or(default, u64::from).clamp(1, max))
        };
        Ok(Probe {
            check,
            initial_delay: Duration::from_secs(u64::from(p.initial_delay_seconds).min(3600)),
            timeout: secs(p.timeout_seconds, 1, 60),
            period: secs(p.period_seconds, 10, 300),
            success_threshold: p.success_threshold.unwrap_or(1).max(1),
            failure_threshold: p.failure_threshold.unwrap_or(3).max(1),
        })
    }

    /// One check: `Err` says why it failed.
    pub async fn once(&self) -> Result<(), String> {
        match tokio::time::timeout(self.timeout, self.check()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn check(&self) -> Result<(), String> {
        match &self.check {
            Check::Exec { command } => {
                let status = tokio::process::Command::new(&command[0])
                    .args(&command[1..])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .status()
                    .await
                    .map_err(|e| format!("{}: {e}", command[0]))?;
                if status.success() {
                    Ok(())
                } else {
                    Err(format!("{} exited with {status}", command[0]))
                }
            }
            Check::App(app) => match crate::probes::check(app).await? {
                s if (200..400).contains(&s) => Ok(()),
                s => Err(format!("the application answered {s}")),
            },
        }
    }

    /// Runs the probe for as long as the returned receiver is held:
    /// `None` until a verdict, then healthy (`Ok`) or unhealthy with why,
    /// moved only by the thresholds.
    pub fn watch(
        self,
    ) -> (
        watch::Receiver<Option<Result<(), String>>>,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(async move {
            tokio::time::sleep(self.initial_delay).await;
            let (mut passed, mut failed) = (0u32, 0u32);
            loop {
                match self.once().await {
                    Ok(()) => {
                        passed += 1;
                        failed = 0;
                        if passed >= self.success_threshold {
                            tx.send_if_modified(|v| {
                                let moved = !matches!(v, Some(Ok(())));
                                *v = Some(Ok(()));
                                moved
                            });
                        }
                    }
                    Err(why) => {
                        failed += 1;
                        passed = 0;
                        let first = tx.borrow().is_none();
                        if failed >= self.failure_threshold || first {
                            tx.send_if_modified(|v| {
                                let moved = !matches!(v, Some(Err(_)));
                                *v = Some(Err(why));
                                moved
                            });
                        }
                    }
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(self.period).await;
            }
        });
        (rx, task)
    }
}

/// The node the registration stream sends: the group, the namespace, the
/// address, the labels.
pub fn node(pod: &PodInfo, group: &WorkloadGroup, address: IpAddr, cluster_domain: &str) -> Node {
    let text = |s: &str| Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    };
    let ns = pod
        .namespace
        .clone()
        .unwrap_or_else(|| group.namespace.clone());
    let mut fields = std::collections::HashMap::from([
        ("AUTO_REGISTER_GROUP".to_owned(), text(&group.name)),
        ("NAMESPACE".to_owned(), text(&ns)),
        ("INSTANCE_IPS".to_owned(), text(&address.to_string())),
    ]);
    if let Some(n) = &group.template.network {
        fields.insert("NETWORK".into(), text(n));
    }
    let name = pod.name.clone().unwrap_or_else(|| group.name.clone());
    Node {
        id: format!("vm~{address}~{name}.{ns}~{ns}.svc.{cluster_domain}"),
        cluster: group.name.clone(),
        metadata: Some(Struct { fields }),
        user_agent_name: "sextant-agent".into(),
        ..Default::default()
    }
}

/// The health report for `verdict` (see the module's text).
fn report(node: Option<Node>, verdict: &Option<Result<(), String>>) -> DiscoveryRequest {
    DiscoveryRequest {
        node,
        type_url: HEALTH_TYPE_URL.into(),
        error_detail: match verdict {
            Some(Ok(())) => None,
            Some(Err(why)) => Some(Status {
                code: 14,
                message: why.clone(),
                details: Vec::new(),
            }),
            // Not probed yet: not ready.
            None => Some(Status {
                code: 14,
                message: "not probed yet".into(),
                details: Vec::new(),
            }),
        },
        ..Default::default()
    }
}

/// Keeps the workload registered (see the module's text) until the task
/// is aborted: one stream at a time, opened again with backoff.
pub async fn keep_registered(
    args: AgentArgs,
    node: Node,
    mut health: watch::Receiver<Option<Result<(), String>>>,
) {
    let mut backoff = Duration::from_millis(200);
    // Replicas in turn: a stream that fails is opened with the next one.
    for attempt in 0usize.. {
        let started = std::time::Instant::now();
        let Some(addr) = args.xds_addrs.get(attempt % args.xds_addrs.len().max(1)) else {
            warn!("no --xds-addr to register with");
            return;
        };
        match session(&args, addr, &node, &mut health).await {
            Ok(()) => warn!("the registration stream ended; opening it again"),
            Err(e) => warn!(error = %e, "the registration stream failed; retrying"),
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = Duration::from_millis(200);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One stream: the node and the current health, then every change, until
/// the stream ends.
async fn session(
    args: &AgentArgs,
    addr: &str,
    node: &Node,
    health: &mut watch::Receiver<Option<Result<(), String>>>,
) -> Result<(), String> {
    let channel =
        crate::workload::channel(addr, args.xds_ca.as_deref().map(Path::new), None).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let first = report(Some(node.clone()), &health.borrow_and_update());
    tx.send(first).await.map_err(|e| e.to_string())?;
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    crate::workload::bearer(&mut request, args.token_file.as_deref())?;
    let mut responses = AggregatedDiscoveryServiceClient::new(channel)
        .stream_aggregated_resources(request)
        .await
        .map_err(|s| format!("refused: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    info!(node = %node.id, %addr, "registered; reporting health on the stream");
    loop {
        tokio::select! {
            changed = health.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let verdict = health.borrow_and_update().clone();
                info!(healthy = matches!(verdict, Some(Ok(()))), "health reported");
                tx.send(report(None, &verdict)).await.map_err(|e| e.to_string())?;
            }
            message = responses.message() => match message {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(s) => return Err(format!("{:?}: {}", s.code(), s.message())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_and_the_flat_form_give_one_group() {
        let manifest = "\
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: { name: cart, namespace: shop }
spec:
  metadata: { labels: { app: cart } }
  template: { ports: { http: 8080 }, serviceAccount: cart }
  probe: { httpGet: { port: 8080, path: /ready }, periodSeconds: 2 }
";
        let flat = "\
name: cart
namespace: shop
metadata: { labels: { app: cart } }
template: { ports: { http: 8080 }, serviceAccount: cart }
probe: { httpGet: { port: 8080, path: /ready }, periodSeconds: 2 }
";
        let (a, b) = (
            parse_group(manifest).expect("manifest"),
            parse_group(flat).expect("flat"),
        );
        assert_eq!(a, b);
        let mut pod = PodInfo::default();
        fill_pod(&mut pod, &a);
        assert_eq!(pod.namespace.as_deref(), Some("shop"));
        assert_eq!(pod.labels.get("app").map(String::as_str), Some("cart"));
        assert_eq!(pod.service_account.as_deref(), Some("cart"));
        let probe = Probe::new(a.probe.as_ref().expect("probe")).expect("runnable");
        assert_eq!(probe.period, Duration::from_secs(2));
        assert_eq!(probe.failure_threshold, 3);

        for (bad, want) in [
            ("kind: Pod\nmetadata: { name: x }", "not WorkloadGroup"),
            (
                "name: x\ntemplate: { address: 10.0.0.1 }",
                "template.address",
            ),
            (
                "name: x\nprobe: { tcpSocket: { port: 1, host: example.com } }",
                "own machine",
            ),
        ] {
            let r = parse_group(bad)
                .and_then(|g| Probe::new(g.probe.as_ref().expect("probe")).map(|_| ()));
            let e = r.expect_err(bad);
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn a_probe_moves_by_its_thresholds() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let group: GroupProbe = serde_json::from_value(serde_json::json!({
            "tcpSocket": { "port": port }, "periodSeconds": 1, "failureThreshold": 2
        }))
        .expect("probe");
        let probe = Probe::new(&group).expect("probe");
        let (mut rx, task) = probe.clone().watch();
        rx.wait_for(|v| matches!(v, Some(Ok(()))))
            .await
            .expect("healthy");
        drop(listener);
        let started = std::time::Instant::now();
        rx.wait_for(|v| matches!(v, Some(Err(_))))
            .await
            .expect("unhealthy");
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "two failures in a row, a period apart"
        );
        let exec = Probe::new(&GroupProbe {
            exec: Some(sextant_core::groups::Exec {
                command: vec!["false".into()],
            }),
            ..Default::default()
        })
        .expect("probe");
        assert!(
            exec.once()
                .await
                .expect_err("false fails")
                .contains("exited")
        );
        task.abort();
    }
}
