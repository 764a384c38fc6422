//! The manifests in deploy/ stay true to the binary and the adapter: every
//! object decodes as its Kubernetes type, RBAC grants what the Kubernetes
//! registry reads, the Deployment's flags pass `sextant check-config`, and
//! the ports line up.
#![allow(clippy::expect_used)]

use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::Deserialize;
use serde_json::Value;

fn documents(file: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file);
    let text = std::fs::read_to_string(&path).expect("read manifest");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("YAML document"))
        .collect()
}

fn one<T: serde::de::DeserializeOwned>(docs: &[Value], kind: &str) -> T {
    let doc = docs
        .iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"));
    serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

#[test]
fn rbac_grants_exactly_what_the_registry_reads_and_writes() {
    let docs = documents("rbac.yaml");
    let role: ClusterRole = one(&docs, "ClusterRole");
    let mut granted = Vec::new();
    for rule in role.rules.expect("rules") {
        let mut verbs = rule.verbs.clone();
        verbs.sort();
        for group in rule.api_groups.expect("groups") {
            for r in rule.resources.clone().expect("resources") {
                granted.push(format!("{group}/{r}: {}", verbs.join(",")));
            }
        }
    }
    granted.sort();
    // Reads, and the one write: route status.
    assert_eq!(
        granted,
        [
            "/nodes: get,list,watch",
            "/pods: get,list,watch",
            "/services: get,list,watch",
            "authentication.k8s.io/tokenreviews: create",
            "discovery.k8s.io/endpointslices: get,list,watch",
            "gateway.networking.k8s.io/grpcroutes/status: patch",
            "gateway.networking.k8s.io/grpcroutes: get,list,watch",
            "gateway.networking.k8s.io/httproutes/status: patch",
            "gateway.networking.k8s.io/httproutes: get,list,watch",
            "networking.istio.io/destinationrules: get,list,watch",
            "networking.istio.io/sidecars: get,list,watch",
            "networking.istio.io/virtualservices: get,list,watch",
        ]
    );
    let binding: ClusterRoleBinding = one(&docs, "ClusterRoleBinding");
    assert_eq!(binding.role_ref.name, role.metadata.name.expect("name"));
    let subject = &binding.subjects.expect("subjects")[0];
    assert_eq!(
        (
            subject.kind.as_str(),
            subject.name.as_str(),
            subject.namespace.as_deref()
        ),
        ("ServiceAccount", "sextant", Some("sextant"))
    );
}

#[test]
fn the_deployment_runs_valid_flags_and_its_ports_match_the_service() {
    let docs = documents("sextant.yaml");
    let deployment: Deployment = one(&docs, "Deployment");
    let pod = deployment.spec.expect("spec").template.spec.expect("pod");
    assert_eq!(pod.service_account_name.as_deref(), Some("sextant"));
    let container = &pod.containers[0];
    let args = container.args.clone().expect("args");
    assert!(args.contains(&"--registries=k8s".to_owned()), "{args:?}");

    // The flags are the binary's own.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sextant"))
        .arg("check-config")
        .args(&args)
        .output()
        .expect("run sextant check-config");
    assert!(
        out.status.success(),
        "check-config {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let container_ports: Vec<i32> = container
        .ports
        .clone()
        .expect("ports")
        .iter()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(container_ports, [15010, 15014]);
    assert!(args.contains(&"--xds-addr=0.0.0.0:15010".to_owned()));
    assert!(args.contains(&"--admin-addr=0.0.0.0:15014".to_owned()));
    let probe = container.readiness_probe.clone().expect("readiness");
    assert_eq!(
        probe.http_get.expect("http").path.as_deref(),
        Some("/healthz/ready")
    );

    let service: Service = one(&docs, "Service");
    let ports: Vec<(i32, String)> = service
        .spec
        .expect("spec")
        .ports
        .expect("ports")
        .iter()
        .map(|p| (p.port, p.name.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        ports,
        [
            (15010, "grpc-xds".to_owned()),
            (15014, "http-monitoring".to_owned())
        ]
    );
}
