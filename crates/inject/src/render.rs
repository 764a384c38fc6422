//! The one renderer: a pod (or a workload's pod template) in, the same pod
//! with the proxy added out. `sextant inject -f` and the webhook both call
//! [`inject`]; nothing else writes a sidecar.
//!
//! What is added (names are Sextant's, fields Kubernetes'):
//! - the init container `sextant-init` running `sextant iptables` with the
//!   capabilities NET_ADMIN and NET_RAW and nothing else privileged;
//! - the proxy `sextant-proxy` running `sextant agent` (Envoy inside), as
//!   user 1337 with a read-only root filesystem, no privilege escalation
//!   and every capability dropped; with native sidecars an init container
//!   with `restartPolicy: Always` and a startup probe on the agent's
//!   readiness (it starts first, stops last, and a Job completes without
//!   it), otherwise the first container with a postStart hook running
//!   `sextant agent wait`, which holds the application's start until the
//!   proxy is ready;
//! - the pod's downward API volume (its labels), a memory volume for the
//!   bootstrap, and, as the template says, a projected token and the xDS
//!   port's CA;
//! - the application containers' HTTP and TCP probes pointed at the agent
//!   ([`crate::probes`]), the originals in the proxy's environment;
//! - the annotation `sidecar.sextant.io/status` recording the template's
//!   hash, the label `security.istio.io/tlsMode: istio` (mutual TLS reads
//!   it on endpoints), and `kubectl.kubernetes.io/default-container` (so
//!   `kubectl logs` shows the application).
//!
//! Left alone: pods on the host network (capture would capture the node),
//! pods already injected, and pods opted out with `sidecar.sextant.io/inject:
//! "false"` as a label or an annotation.
//!
//! The pod is edited as JSON, not through Kubernetes' typed model: what
//! Sextant adds is built from the typed model (so it is well-formed), but
//! the user's own fields are never decoded and encoded again, so a field
//! newer than the model Sextant was built with is kept as it was.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, DownwardAPIVolumeFile,
    DownwardAPIVolumeSource, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction, HTTPGetAction,
    Lifecycle, LifecycleHandler, ObjectFieldSelector, Probe, ProjectedVolumeSource,
    ResourceRequirements, SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount,
    VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::template::{STATUS_PORT, Template};

/// The label or annotation that opts a pod in (`"true"`) or out (`"false"`).
pub const INJECT: &str = "sidecar.sextant.io/inject";
/// The annotation recording an injection: `{"template":"HASH","native":BOOL}`.
pub const STATUS: &str = "sidecar.sextant.io/status";
/// The proxy's container name.
pub const PROXY: &str = "sextant-proxy";
/// The capture init container's name.
pub const INIT: &str = "sextant-init";
/// The label mutual TLS reads on endpoints to know they have a sidecar.
pub const TLS_MODE: &str = "security.istio.io/tlsMode";

const PODINFO_VOLUME: &str = "sextant-podinfo";
const PROXY_VOLUME: &str = "sextant-proxy";
const TOKEN_VOLUME: &str = "sextant-token";
const CA_VOLUME: &str = "sextant-ca";
const PODINFO_DIR: &str = "/etc/sextant/pod";
const PROXY_DIR: &str = "/etc/sextant/proxy";
const TOKEN_DIR: &str = "/var/run/secrets/sextant";
const CA_DIR: &str = "/etc/sextant/ca";

/// What happened to a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The proxy was added.
    Injected,
    /// Left as it was, and why.
    Skipped(Skip),
}

/// Why a pod was left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// `sidecar.sextant.io/inject: "false"`.
    OptedOut,
    /// It runs on the host's network.
    HostNetwork,
    /// It has a proxy already.
    AlreadyInjected,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Skip::OptedOut => "opted out (sidecar.sextant.io/inject: \"false\")",
            Skip::HostNetwork => "on the host network",
            Skip::AlreadyInjected => "already injected",
        })
    }
}

fn says_false(map: &Value) -> bool {
    map.get(INJECT)
        .and_then(Value::as_str)
        .is_some_and(|v| v.eq_ignore_ascii_case("false"))
}

fn names(list: &Value) -> impl Iterator<Item = &str> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
}

/// Why the pod (its `metadata` and `spec`) must be left alone, if it must.
pub fn skip(meta: &Value, spec: &Value) -> Option<Skip> {
    if says_false(&meta["labels"]) || says_false(&meta["annotations"]) {
        return Some(Skip::OptedOut);
    }
    if spec["hostNetwork"] == Value::Bool(true) {
        return Some(Skip::HostNetwork);
    }
    let has_proxy = names(&spec["containers"])
        .chain(names(&spec["initContainers"]))
        .any(|n| n == PROXY);
    if has_proxy || meta["annotations"].get(STATUS).is_some() {
        return Some(Skip::AlreadyInjected);
    }
    None
}

/// `value` as a JSON object, made one if it is not.
fn object(value: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(serde_json::Map::new());
    }
    match value {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

/// The list at `key` of `map`, made one if it is not.
fn list<'a>(map: &'a mut serde_json::Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let v = map.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if !v.is_array() {
        *v = Value::Array(Vec::new());
    }
    match v {
        Value::Array(a) => a,
        _ => unreachable!("made an array above"),
    }
}

fn json<T: serde::Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// Adds the proxy to the pod whose `metadata` and `spec` these are, as a
/// native sidecar when `native` (see the module docs), unless the pod is to
/// be left alone.
pub fn inject(meta: &mut Value, spec: &mut Value, t: &Template, native: bool) -> Outcome {
    if let Some(why) = skip(meta, spec) {
        return Outcome::Skipped(why);
    }
    let first_app = names(&spec["containers"]).next().map(str::to_owned);
    let mut proxy = proxy_container(t);
    if native {
        proxy.restart_policy = Some("Always".to_owned());
        proxy.startup_probe = Some(readiness_probe(1, 600));
    } else {
        proxy.lifecycle = Some(Lifecycle {
            post_start: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![
                        "sextant".to_owned(),
                        "agent".to_owned(),
                        "wait".to_owned(),
                        "--status-addr".to_owned(),
                        format!("127.0.0.1:{STATUS_PORT}"),
                    ]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let spec = object(spec);
    if !crate::probes::opted_out(meta) {
        let originals = crate::probes::rewrite(list(spec, "containers"));
        if !originals.is_empty() {
            proxy.env.get_or_insert_default().push(EnvVar {
                name: crate::probes::APP_PROBES_ENV.to_owned(),
                value: Some(serde_json::to_string(&originals).unwrap_or_default()),
                ..Default::default()
            });
        }
    }
    let mut ours = vec![json(&init_container(t))];
    if native {
        ours.push(json(&proxy));
    } else {
        list(spec, "containers").insert(0, json(&proxy));
    }
    let inits = list(spec, "initContainers");
    inits.splice(0..0, ours);
    list(spec, "volumes").extend(volumes(t).iter().map(json));

    let meta = object(meta);
    let annotations = object(meta.entry("annotations").or_insert(Value::Null));
    annotations.insert(
        STATUS.to_owned(),
        Value::String(serde_json::json!({ "template": t.hash(), "native": native }).to_string()),
    );
    if let Some(app) = first_app {
        annotations
            .entry("kubectl.kubernetes.io/default-container")
            .or_insert(Value::String(app));
    }
    object(meta.entry("labels").or_insert(Value::Null))
        .insert(TLS_MODE.to_owned(), Value::String("istio".to_owned()));
    Outcome::Injected
}

/// The template hash a pod (its `metadata`) was injected with, if it was.
pub fn injected_hash(meta: &Value) -> Option<String> {
    let status = meta["annotations"].get(STATUS)?.as_str()?;
    let v: Value = serde_json::from_str(status).ok()?;
    v["template"].as_str().map(str::to_owned)
}

fn quantities(m: &BTreeMap<String, String>) -> Option<BTreeMap<String, Quantity>> {
    (!m.is_empty()).then(|| {
        m.iter()
            .map(|(k, v)| (k.clone(), Quantity(v.clone())))
            .collect()
    })
}

fn field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn readiness_probe(period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz/ready".to_owned()),
            port: IntOrString::Int(i32::from(STATUS_PORT)),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn proxy_container(t: &Template) -> Container {
    let mut args: Vec<String> = [
        "agent",
        "--xds-addr",
        &t.xds_address,
        "--status-addr",
        &format!("0.0.0.0:{STATUS_PORT}"),
        "--proxy-dir",
        PROXY_DIR,
        "--pod-info-dir",
        PODINFO_DIR,
        "--mode",
        "capture",
        "--concurrency",
        &t.concurrency.to_string(),
        "--proxy-log-level",
        &t.proxy_log_level,
        "--drain-deadline",
        &t.drain_deadline,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut mounts = vec![
        mount(PODINFO_VOLUME, PODINFO_DIR, true),
        mount(PROXY_VOLUME, PROXY_DIR, false),
    ];
    if t.xds_ca_config_map.is_some() {
        args.extend(["--xds-ca".to_owned(), format!("{CA_DIR}/root-cert.pem")]);
        mounts.push(mount(CA_VOLUME, CA_DIR, true));
    }
    if t.token_audience.is_some() {
        args.extend(["--token-file".to_owned(), format!("{TOKEN_DIR}/token")]);
        mounts.push(mount(TOKEN_VOLUME, TOKEN_DIR, true));
    }
    Container {
        name: PROXY.to_owned(),
        image: Some(t.image.clone()),
        image_pull_policy: Some(t.image_pull_policy.clone()),
        args: Some(args),
        env: Some(vec![
            field("POD_NAME", "metadata.name"),
            field("POD_NAMESPACE", "metadata.namespace"),
            field("INSTANCE_IP", "status.podIP"),
            field("SERVICE_ACCOUNT", "spec.serviceAccountName"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("sextant-status".to_owned()),
            container_port: i32::from(STATUS_PORT),
            protocol: Some("TCP".to_owned()),
            ..Default::default()
        }]),
        readiness_probe: Some(readiness_probe(2, 30)),
        resources: Some(ResourceRequirements {
            requests: quantities(&t.resources.requests),
            limits: quantities(&t.resources.limits),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            run_as_user: Some(t.proxy_uid),
            run_as_group: Some(t.proxy_uid),
            run_as_non_root: Some(true),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(mounts),
        ..Default::default()
    }
}

fn init_container(t: &Template) -> Container {
    let mut inbound = vec![STATUS_PORT];
    inbound.extend(&t.exclude_inbound_ports);
    let list = |ports: &[u16]| {
        ports
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut args = vec![
        "iptables".to_owned(),
        "--proxy-uid".to_owned(),
        t.proxy_uid.to_string(),
        "--exclude-inbound-ports".to_owned(),
        list(&inbound),
    ];
    if !t.exclude_outbound_ports.is_empty() {
        args.extend([
            "--exclude-outbound-ports".to_owned(),
            list(&t.exclude_outbound_ports),
        ]);
    }
    if !t.exclude_outbound_cidrs.is_empty() {
        args.extend([
            "--exclude-outbound-cidrs".to_owned(),
            t.exclude_outbound_cidrs.join(","),
        ]);
    }
    let small = |cpu: &str, memory: &str| {
        Some(BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ]))
    };
    Container {
        name: INIT.to_owned(),
        image: Some(t.image.clone()),
        image_pull_policy: Some(t.image_pull_policy.clone()),
        args: Some(args),
        resources: Some(ResourceRequirements {
            requests: small("10m", "10Mi"),
            limits: small("100m", "50Mi"),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            // Root, with exactly the capabilities iptables needs.
            run_as_user: Some(0),
            run_as_group: Some(0),
            run_as_non_root: Some(false),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".to_owned(), "NET_RAW".to_owned()]),
                drop: Some(vec!["ALL".to_owned()]),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn volumes(t: &Template) -> Vec<Volume> {
    let mut out = vec![
        Volume {
            name: PODINFO_VOLUME.to_owned(),
            downward_api: Some(DownwardAPIVolumeSource {
                items: Some(vec![
                    DownwardAPIVolumeFile {
                        path: "labels".to_owned(),
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.labels".to_owned(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    DownwardAPIVolumeFile {
                        path: "annotations".to_owned(),
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.annotations".to_owned(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: PROXY_VOLUME.to_owned(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: Some("Memory".to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    if let Some(audience) = &t.token_audience {
        out.push(Volume {
            name: TOKEN_VOLUME.to_owned(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(audience.clone()),
                        expiration_seconds: Some(43_200),
                        path: "token".to_owned(),
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if let Some(name) = &t.xds_ca_config_map {
        out.push(Volume {
            name: CA_VOLUME.to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    out
}
