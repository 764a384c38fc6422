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
    // Reads, and the writes: route status, the root certificate's
    // ConfigMaps.
    assert_eq!(
        granted,
        [
            "/configmaps: create,get,patch",
            "/namespaces: list,watch",
            "/nodes: get,list,watch",
            "/pods: get,list,watch",
            "/secrets: get,list,watch",
            "/services: get,list,watch",
            "authentication.k8s.io/tokenreviews: create",
            "discovery.k8s.io/endpointslices: get,list,watch",
            "gateway.networking.k8s.io/gatewayclasses/status: patch",
            "gateway.networking.k8s.io/gatewayclasses: get,list,watch",
            "gateway.networking.k8s.io/gateways/status: patch",
            "gateway.networking.k8s.io/gateways: get,list,watch",
            "gateway.networking.k8s.io/grpcroutes/status: patch",
            "gateway.networking.k8s.io/grpcroutes: get,list,watch",
            "gateway.networking.k8s.io/httproutes/status: patch",
            "gateway.networking.k8s.io/httproutes: get,list,watch",
            "gateway.networking.k8s.io/referencegrants: get,list,watch",
            "gateway.networking.k8s.io/tcproutes/status: patch",
            "gateway.networking.k8s.io/tcproutes: get,list,watch",
            "gateway.networking.k8s.io/tlsroutes/status: patch",
            "gateway.networking.k8s.io/tlsroutes: get,list,watch",
            "networking.istio.io/destinationrules: get,list,watch",
            "networking.istio.io/gateways: get,list,watch",
            "networking.istio.io/serviceentries: get,list,watch",
            "networking.istio.io/sidecars: get,list,watch",
            "networking.istio.io/virtualservices: get,list,watch",
            "networking.istio.io/workloadentries/status: patch",
            "networking.istio.io/workloadentries: create,delete,patch",
            "networking.istio.io/workloadentries: get,list,watch",
            "networking.istio.io/workloadgroups: get,list,watch",
            "networking.k8s.io/ingresses/status: patch",
            "networking.k8s.io/ingresses: get,list,watch",
            "security.istio.io/authorizationpolicies: get,list,watch",
            "security.istio.io/peerauthentications: get,list,watch",
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

/// Decodes `doc` as `T` and encodes it again: equal only when Kubernetes'
/// model knows every field (a typo in a manifest is not silently lost).
fn strict<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value) -> T {
    let typed: T =
        serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{}: {e}", doc["kind"]));
    let again = serde_json::to_value(&typed).expect("encodes");
    assert_eq!(
        &again, doc,
        "{}: a field is unknown to Kubernetes",
        doc["kind"]
    );
    typed
}

#[test]
fn the_injection_manifests_fit_together_and_never_hold_the_system_namespaces() {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
    let docs = documents("injection.yaml");
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ConfigMap",
            "Deployment",
            "Service",
            "MutatingWebhookConfiguration"
        ]
    );
    let _: ServiceAccount = strict(&docs[0]);
    let template: ConfigMap = strict(&docs[1]);
    let deployment: Deployment = strict(&docs[2]);
    let service: Service = strict(&docs[3]);
    let mwc: MutatingWebhookConfiguration = strict(&docs[4]);

    // The template is one sextant reads.
    let text = &template.data.expect("data")["template.yaml"];
    let t = sextant_inject::Template::parse(text).expect("the shipped template");
    assert_eq!(
        t.xds_address, "sextant.sextant.svc:15010",
        "the Service in sextant.yaml"
    );

    // The Deployment mounts the template and the certificate where its
    // arguments say, and serves where the Service sends.
    let namespace = deployment.metadata.namespace.clone().expect("namespace");
    let pod = deployment.spec.expect("spec").template.spec.expect("pod");
    let container = &pod.containers[0];
    let args = container.args.clone().expect("args");
    let arg = |flag: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("{flag}=")))
            .unwrap_or_else(|| panic!("no {flag} in {args:?}"))
            .to_owned()
    };
    assert_eq!(args[0], "webhook");
    let mounted = |path: &str| {
        container
            .volume_mounts
            .clone()
            .unwrap_or_default()
            .iter()
            .find(|m| path.starts_with(&format!("{}/", m.mount_path)))
            .map(|m| m.name.clone())
            .unwrap_or_else(|| panic!("{path} is not mounted"))
    };
    let volume = |name: String| {
        pod.volumes
            .clone()
            .unwrap_or_default()
            .into_iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    let tls = volume(mounted(&arg("--tls-cert")));
    assert_eq!(mounted(&arg("--tls-key")), tls.name);
    let secret = tls.secret.expect("a secret").secret_name.expect("name");
    let config = volume(mounted(&arg("--template")));
    assert_eq!(
        config.config_map.expect("a ConfigMap").name,
        template.metadata.name.clone().expect("name")
    );
    let port: u16 = arg("--addr")
        .rsplit(':')
        .next()
        .expect("port")
        .parse()
        .expect("port");
    assert_eq!(port, 15017, "Istio's webhook port");
    let probe = container.readiness_probe.clone().expect("readiness");
    let http = probe.http_get.expect("http");
    assert_eq!(
        (http.path.as_deref(), http.scheme.as_deref()),
        (Some("/healthz/ready"), Some("HTTPS"))
    );
    let service_port = &service.spec.clone().expect("spec").ports.expect("ports")[0];
    assert_eq!(
        service_port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(15017))
    );

    // Every webhook: fails closed, calls the Service at /inject, and can
    // never match the cluster's own namespaces or the webhook's.
    let webhooks = mwc.webhooks.clone().expect("webhooks");
    assert_eq!(webhooks.len(), 2);
    for hook in &webhooks {
        assert_eq!(
            hook.failure_policy.as_deref(),
            Some("Fail"),
            "{}",
            hook.name
        );
        let svc = hook.client_config.service.clone().expect("service");
        assert_eq!(Some(svc.name), service.metadata.name.clone());
        assert_eq!(svc.namespace, namespace);
        assert_eq!(svc.port, Some(service_port.port));
        assert_eq!(svc.path.as_deref(), Some("/inject"));
        let selector = hook.namespace_selector.clone().expect("namespaceSelector");
        let never = selector
            .match_expressions
            .unwrap_or_default()
            .into_iter()
            .find(|e| e.key == "kubernetes.io/metadata.name" && e.operator == "NotIn")
            .unwrap_or_else(|| panic!("{}: no exclusion of system namespaces", hook.name))
            .values
            .unwrap_or_default();
        for ns in [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            namespace.as_str(),
        ] {
            assert!(
                never.iter().any(|n| n == ns),
                "{}: {ns} is not excluded",
                hook.name
            );
        }
        assert!(hook.timeout_seconds.is_some_and(|t| t <= 10));
        assert_eq!(hook.side_effects, "None");
    }

    // cert-manager's way: the certificate lands in the secret the
    // Deployment mounts, names the Service, and is the one whose CA the
    // webhook configuration asks to be injected.
    let cm = documents("injection-cert-manager.yaml");
    let cert = cm
        .iter()
        .find(|d| d["kind"] == "Certificate" && d["spec"]["secretName"] == secret.as_str())
        .unwrap_or_else(|| panic!("no Certificate writes {secret}"));
    let dns = format!(
        "{}.{namespace}.svc",
        service.metadata.name.clone().expect("name")
    );
    assert!(
        cert["spec"]["dnsNames"]
            .as_array()
            .expect("dnsNames")
            .iter()
            .any(|n| n == dns.as_str()),
        "{cert}"
    );
    assert_eq!(
        mwc.metadata.annotations.expect("annotations")["cert-manager.io/inject-ca-from"],
        format!(
            "{}/{}",
            cert["metadata"]["namespace"].as_str().expect("ns"),
            cert["metadata"]["name"].as_str().expect("name")
        )
    );
}

/// deploy/gateway.yaml: every field known to Kubernetes' model; the
/// agent's flags are its own (`sextant agent --help` parses them: run with
/// a bad xDS address it fails for want of an Envoy, not of a flag); the
/// Service maps each declared port to where the offset puts it, and
/// readiness is the agent's.
#[test]
fn the_gateway_deployment_fits_the_agent_and_its_service() {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let docs = documents("gateway.yaml");
    for doc in &docs {
        match doc["kind"].as_str() {
            Some("Deployment") => {
                strict::<Deployment>(doc);
            }
            Some("Service") => {
                strict::<Service>(doc);
            }
            _ => {}
        }
    }
    let deployment: Deployment = one(&docs, "Deployment");
    let pod = deployment.spec.expect("spec").template.spec.expect("pod");
    let container = &pod.containers[0];
    let args = container.args.clone().expect("args");
    let offset: i32 = args
        .iter()
        .find_map(|a| a.strip_prefix("--gateway-port-offset="))
        .expect("an offset")
        .parse()
        .expect("a number");
    // The flags parse: `agent ARGS --help` fails on an unknown flag before
    // it prints the help.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sextant"))
        .args(&args)
        .arg("--help")
        .output()
        .expect("run sextant agent --help");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let probe = container.readiness_probe.clone().expect("readiness");
    assert_eq!(
        probe.http_get.expect("http").path.as_deref(),
        Some("/healthz/ready")
    );
    let container_ports: Vec<i32> = container
        .ports
        .clone()
        .expect("ports")
        .iter()
        .map(|p| p.container_port)
        .collect();
    let service: Service = one(&docs, "Service");
    for p in service.spec.expect("spec").ports.expect("ports") {
        let target = match p.target_port {
            Some(IntOrString::Int(t)) => t,
            other => panic!("{other:?}"),
        };
        let want = if p.port < 1024 {
            p.port + offset
        } else {
            p.port
        };
        assert_eq!(target, want, "port {}", p.port);
        assert!(container_ports.contains(&target), "{target}");
    }
}
