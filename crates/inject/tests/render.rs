//! Injection over real-shaped manifests: what is added where, what is left
//! alone, that every output is a valid object in Kubernetes' own model
//! (k8s-openapi, decoded strictly: nothing of ours is dropped or unknown),
//! and that `sextant inject -f` and the webhook give the same pod.
#![allow(clippy::expect_used)]

use serde_json::{Value, json};
use sextant_inject::manifest::inject_manifests;
use sextant_inject::render::{INIT, INJECT, PROXY, STATUS, TLS_MODE};
use sextant_inject::review::{apply, review};
use sextant_inject::{Outcome, Skip, Template};

const DEPLOYMENT: &str = r#"# The shop's web front, with an init container of its own.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  selector:
    matchLabels: { app: web }
  template:
    metadata:
      labels: { app: web, version: v1 }
    spec:
      serviceAccountName: web
      initContainers:
        - name: migrate
          image: shop/migrate:1.4
          args: [--up]
      containers:
        - name: web
          image: shop/web:1.4
          ports: [{ containerPort: 8080, name: http }]
          readinessProbe:
            httpGet: { path: /ready, port: 8080 }
      volumes:
        - name: config
          configMap: { name: web-config }
"#;

const SERVICE: &str = r#"# Untouched, comments and all.
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector: { app: web }
  ports: [{ port: 80, targetPort: 8080, name: http }]"#;

fn docs(text: &str) -> Vec<Value> {
    text.split("\n---\n")
        .map(|d| serde_yaml_ng::from_str(d).expect("yaml"))
        .collect()
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect()
}

/// Decodes `value` as `T` and encodes it again: equal only when Kubernetes'
/// model knows every field and drops none.
fn strict<T: serde::de::DeserializeOwned + serde::Serialize>(value: &Value) -> T {
    let typed: T = serde_json::from_value(value.clone()).expect("decodes as the Kubernetes type");
    let again = serde_json::to_value(&typed).expect("encodes");
    assert_eq!(
        &again, value,
        "a field was dropped or reshaped by the model"
    );
    typed
}

#[test]
fn a_deployment_gets_the_proxy_after_capture_and_before_its_own_init_containers() {
    let t = Template::default();
    let out =
        inject_manifests(&format!("{DEPLOYMENT}---\n{SERVICE}\n"), &t, false).expect("inject");
    assert_eq!(out.reports.len(), 1);
    assert_eq!(out.reports[0].object, "Deployment shop/web");
    assert_eq!(out.reports[0].outcome, Outcome::Injected);
    assert!(
        out.text.ends_with(&format!("{SERVICE}\n")),
        "the Service passes through as written:\n{}",
        out.text
    );
    let d = docs(&out.text);
    let pod = &d[0]["spec"]["template"];
    let spec = &pod["spec"];
    assert_eq!(names(&spec["initContainers"]), [INIT, "migrate"]);
    assert_eq!(
        names(&spec["containers"]),
        [PROXY, "web"],
        "the proxy starts first"
    );
    let proxy = &spec["containers"][0];
    assert_eq!(
        proxy["lifecycle"]["postStart"]["exec"]["command"],
        json!([
            "sextant",
            "agent",
            "wait",
            "--status-addr",
            "127.0.0.1:15021"
        ]),
        "the application waits for its proxy"
    );
    assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
    assert_eq!(proxy["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(proxy["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        proxy["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    let init = &spec["initContainers"][0];
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );
    assert_eq!(init["securityContext"]["privileged"], false);
    assert!(
        init["args"]
            .as_array()
            .expect("args")
            .windows(2)
            .any(|w| w[0] == "--exclude-inbound-ports" && w[1] == "15021"),
        "the kubelet's probes of the status port are not captured: {}",
        init["args"]
    );
    assert_eq!(
        names(&spec["volumes"]),
        ["config", "sextant-podinfo", "sextant-proxy"]
    );
    assert_eq!(pod["metadata"]["labels"][TLS_MODE], "istio");
    assert_eq!(
        pod["metadata"]["labels"]["app"], "web",
        "the pod's labels are kept"
    );
    let status: Value = serde_json::from_str(
        pod["metadata"]["annotations"][STATUS]
            .as_str()
            .expect("status"),
    )
    .expect("json");
    assert_eq!(status["template"], t.hash());
    assert_eq!(
        pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"],
        "web"
    );
    // Nothing of the user's was touched beyond the lists we add to and the
    // probe, which now goes through the agent (the original in its
    // environment, the port resolved).
    assert_eq!(d[0]["spec"]["replicas"], 2);
    assert_eq!(
        spec["containers"][1]["readinessProbe"]["httpGet"],
        serde_json::json!({ "path": "/app-health/web/readyz", "port": 15021, "scheme": "HTTP" })
    );
    let env = spec["containers"][0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "SEXTANT_APP_PROBES")
        .expect("the original probes");
    let originals: Value =
        serde_json::from_str(env["value"].as_str().expect("value")).expect("json");
    assert_eq!(
        originals["/app-health/web/readyz"]["httpGet"]["path"],
        "/ready"
    );
    strict::<k8s_openapi::api::apps::v1::Deployment>(&d[0]);
}

#[test]
fn what_must_be_left_alone_is() {
    let t = Template::default();
    let pod = |extra_meta: &str, extra_spec: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: shop\n{extra_meta}spec:\n{extra_spec}  containers:\n    - {{ name: app, image: app:1 }}\n"
        )
    };
    let cases = [
        ("", "  hostNetwork: true\n", Skip::HostNetwork),
        (
            &format!("  labels: {{ {INJECT}: \"false\" }}\n") as &str,
            "",
            Skip::OptedOut,
        ),
        (
            &format!("  annotations: {{ {INJECT}: \"false\" }}\n"),
            "",
            Skip::OptedOut,
        ),
    ];
    for (meta, spec, why) in cases {
        let text = pod(meta, spec);
        let out = inject_manifests(&text, &t, false).expect("inject");
        assert_eq!(out.reports[0].outcome, Outcome::Skipped(why), "{text}");
        assert_eq!(out.text, text, "left exactly as written");
    }
    // Already injected: a second pass changes nothing.
    let once = inject_manifests(&pod("", ""), &t, false).expect("inject");
    let twice = inject_manifests(&once.text, &t, false).expect("inject");
    assert_eq!(
        twice.reports[0].outcome,
        Outcome::Skipped(Skip::AlreadyInjected)
    );
    assert_eq!(twice.text, once.text);
}

#[test]
fn a_job_and_a_cronjob_get_a_native_sidecar_that_lets_them_complete() {
    let t = Template::default();
    let text = "apiVersion: batch/v1\nkind: Job\nmetadata: { name: report, namespace: shop }\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{ name: report, image: shop/report:2 }]\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata: { name: nightly, namespace: shop }\nspec:\n  schedule: \"0 3 * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers: [{ name: nightly, image: shop/nightly:2 }]\n";
    let out = inject_manifests(text, &t, true).expect("inject");
    assert_eq!(out.reports.len(), 2);
    let d = docs(&out.text);
    for spec in [
        &d[0]["spec"]["template"]["spec"],
        &d[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"],
    ] {
        assert_eq!(names(&spec["initContainers"]), [INIT, PROXY]);
        assert_eq!(spec["initContainers"][1]["restartPolicy"], "Always");
        assert_eq!(
            spec["initContainers"][1]["startupProbe"]["httpGet"]["path"], "/healthz/ready",
            "the next container starts once the proxy is ready"
        );
        assert!(spec["initContainers"][1]["lifecycle"].is_null());
        assert_eq!(
            names(&spec["containers"]).len(),
            1,
            "the job's own container only"
        );
    }
    strict::<k8s_openapi::api::batch::v1::Job>(&d[0]);
    strict::<k8s_openapi::api::batch::v1::CronJob>(&d[1]);
}

#[test]
fn the_template_decides_the_token_and_the_ca() {
    let t = Template::parse(
        "xdsAddress: sextant.sextant.svc:15012\nxdsCaConfigMap: istio-ca-root-cert\ntokenAudience: sextant\nexcludeOutboundCidrs: [169.254.169.254/32]\n",
    )
    .expect("template");
    let out = inject_manifests(
        "apiVersion: v1\nkind: Pod\nmetadata: { name: p, namespace: shop }\nspec:\n  containers: [{ name: app, image: app:1 }]\n",
        &t,
        false,
    )
    .expect("inject");
    let pod = &docs(&out.text)[0];
    let args: Vec<&str> = pod["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.windows(2)
            .any(|w| w == ["--xds-addr", "sextant.sextant.svc:15012"])
    );
    assert!(
        args.windows(2)
            .any(|w| w == ["--token-file", "/var/run/secrets/sextant/token"])
    );
    assert!(
        args.windows(2)
            .any(|w| w == ["--xds-ca", "/etc/sextant/ca/root-cert.pem"])
    );
    let volumes = &pod["spec"]["volumes"];
    assert_eq!(
        volumes[2]["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "sextant"
    );
    assert_eq!(volumes[3]["configMap"]["name"], "istio-ca-root-cert");
    let init_args = pod["spec"]["initContainers"][0]["args"].to_string();
    assert!(init_args.contains("169.254.169.254/32"), "{init_args}");
    strict::<k8s_openapi::api::core::v1::Pod>(pod);
}

/// The webhook's patch applied to the pod the API server sent is exactly
/// the pod `sextant inject -f` writes, for every case above.
#[test]
fn the_cli_and_the_webhook_give_the_same_pod() {
    let t = Template::default();
    let pods = [
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web-1\n  namespace: shop\n  labels: { app: web }\n  annotations: { team: shop }\nspec:\n  initContainers: [{ name: migrate, image: m:1 }]\n  containers:\n    - { name: web, image: web:1, ports: [{ containerPort: 8080 }] }\n  volumes: [{ name: c, emptyDir: {} }]\n",
        "apiVersion: v1\nkind: Pod\nmetadata: { generateName: job-, namespace: shop }\nspec:\n  restartPolicy: Never\n  containers: [{ name: job, image: job:1 }]\n",
        "apiVersion: v1\nkind: Pod\nmetadata: { name: host, namespace: shop }\nspec:\n  hostNetwork: true\n  containers: [{ name: agent, image: agent:1 }]\n",
    ];
    for native in [false, true] {
        for text in pods {
            let cli = &docs(&inject_manifests(text, &t, native).expect("cli").text)[0];
            let original: Value = serde_yaml_ng::from_str(text).expect("yaml");
            let request = json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "namespace": "shop",
                    "operation": "CREATE",
                    "object": original,
                }
            });
            let decision = review(&request, &t, native).expect("review");
            let response = &decision.response["response"];
            assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
            assert_eq!(response["allowed"], true);
            let mut webhook = original.clone();
            if let Some(patch) = response["patch"].as_str() {
                assert_eq!(response["patchType"], "JSONPatch");
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(patch)
                    .expect("base64");
                let ops: Vec<Value> = serde_json::from_slice(&bytes).expect("patch");
                apply(&mut webhook, &ops).expect("apply");
            }
            assert_eq!(&webhook, cli, "native {native}:\n{text}");
            strict::<k8s_openapi::api::core::v1::Pod>(&webhook);
        }
    }
}

/// Anything but a pod being created is allowed as it is.
#[test]
fn the_webhook_allows_what_it_does_not_inject() {
    let t = Template::default();
    for (kind, op) in [("Pod", "UPDATE"), ("Service", "CREATE")] {
        let request = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "kind": {"group": "", "version": "v1", "kind": kind},
                        "operation": op, "object": {"metadata": {"name": "x"}}}
        });
        let d = review(&request, &t, false).expect("review");
        assert_eq!(d.response["response"]["allowed"], true);
        assert!(d.response["response"]["patch"].is_null());
        assert_eq!(d.outcome, None);
    }
    assert!(
        review(&json!({"request": {}}), &t, false).is_err(),
        "no uid"
    );
}
