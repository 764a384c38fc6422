//! Injection as users meet it: the real `sextant webhook`, run with the
//! arguments, template and MutatingWebhookConfiguration shipped in
//! deploy/injection.yaml, called by the Kubernetes API double the way the
//! API server calls webhooks (selectors, HTTPS verified with the caBundle,
//! JSON Patch, failurePolicy), driven with kubectl; `sextant inject -f` on
//! manifests; the audit, from the command line and as the control plane's
//! metric.
#![allow(clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use sextant_testkit::k8s::{KubeDouble, Kubectl};
use sextant_testkit::peers::free_port;
use tokio::process::{Child, Command};

mod common;

use common::*;

const NS_HOOK: &str = "namespace.sidecar.sextant.io";
const OBJECT_HOOK: &str = "object.sidecar.sextant.io";

/// The documents of deploy/injection.yaml.
fn shipped() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/injection.yaml");
    let text = std::fs::read_to_string(&path).expect("read deploy/injection.yaml");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("YAML document"))
        .collect()
}

fn shipped_kind(kind: &str) -> Value {
    shipped()
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("deploy/injection.yaml has no {kind}"))
}

/// `sextant webhook certs --out DIR` (the defaults name the shipped
/// Service); the caBundle it prints.
async fn make_certs(dir: &Path) -> String {
    let out = Command::new(BIN)
        .args(["webhook", "certs", "--out"])
        .arg(dir)
        .output()
        .await
        .expect("run sextant webhook certs");
    assert!(
        out.status.success(),
        "webhook certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// A running `sextant webhook`, started with the shipped Deployment's
/// arguments (its address, certificate and template paths pointed at the
/// test's files).
struct Webhook {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Webhook {
    async fn start(dir: &Path, kubeconfig: &Path) -> Webhook {
        let deployment = shipped_kind("Deployment");
        let template = shipped_kind("ConfigMap")["data"]["template.yaml"]
            .as_str()
            .expect("the ConfigMap's template.yaml")
            .to_owned();
        std::fs::write(dir.join("template.yaml"), template).expect("template");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let shipped_args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .expect("the webhook's args")
            .iter()
            .map(|a| a.as_str().expect("arg").to_owned());
        let mut args = Vec::new();
        for a in shipped_args {
            let (flag, _) = a.split_once('=').unwrap_or((&a, ""));
            args.push(match flag {
                "--addr" => format!("--addr={addr}"),
                "--tls-cert" => format!("--tls-cert={}", dir.join("tls.crt").display()),
                "--tls-key" => format!("--tls-key={}", dir.join("tls.key").display()),
                "--template" => format!("--template={}", dir.join("template.yaml").display()),
                _ => a,
            });
        }
        args.push(format!("--kubeconfig={}", kubeconfig.display()));
        let log = dir.join(format!("webhook-{}.log", addr.port()));
        let file = std::fs::File::create(&log).expect("log");
        let mut child = Command::new(BIN)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("start sextant webhook");
        let start = Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the webhook exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the webhook never listened"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Webhook { child, addr, log }
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A double with kubectl, a directory, and the webhook's certificate.
struct Cluster {
    double: KubeDouble,
    kubectl: Kubectl,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Cluster {
    async fn start() -> Cluster {
        let double = KubeDouble::start().await;
        let kubectl = Kubectl::new(&double);
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = double.kubeconfig(dir.path(), "double");
        Cluster {
            double,
            kubectl,
            dir,
            kubeconfig,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    async fn kubectl_ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.kubectl.run(args).await;
        assert!(ok, "kubectl {args:?}: {err}");
        out
    }

    /// `kubectl apply -f` of `text`; (success, stdout, stderr).
    async fn apply(&self, text: &str) -> (bool, String, String) {
        let file = self.path().join(format!("apply-{}.yaml", free_port()));
        std::fs::write(&file, text).expect("write manifest");
        self.kubectl
            .run(&[
                "apply",
                "--validate=false",
                "-f",
                file.to_str().expect("path"),
            ])
            .await
    }

    /// Applies the shipped MutatingWebhookConfiguration with `ca` as its
    /// caBundle, and resolves its Service to `webhook`.
    async fn install_webhook_config(&self, ca: &str, webhook: SocketAddr) {
        let mut mwc = shipped_kind("MutatingWebhookConfiguration");
        for hook in mwc["webhooks"].as_array_mut().expect("webhooks") {
            hook["clientConfig"]["caBundle"] = Value::from(ca);
            let svc = &hook["clientConfig"]["service"];
            self.double.route_service(
                svc["namespace"].as_str().expect("namespace"),
                svc["name"].as_str().expect("name"),
                u16::try_from(svc["port"].as_u64().expect("port")).expect("port"),
                webhook,
            );
        }
        // Applying a changed built-in object again is a strategic merge
        // patch, which the double does not serve: replaced by delete and
        // apply.
        let name = mwc["metadata"]["name"].as_str().expect("name").to_owned();
        let _ = self
            .kubectl
            .run(&[
                "delete",
                "mutatingwebhookconfiguration",
                &name,
                "--ignore-not-found",
            ])
            .await;
        let (ok, _, err) = self.apply(&mwc.to_string()).await;
        assert!(ok, "apply the MutatingWebhookConfiguration: {err}");
    }

    /// Creates the namespace `name` (applied as YAML: `kubectl create
    /// namespace` sends protobuf, which the double does not read).
    async fn namespace(&self, name: &str) {
        let (ok, _, err) = self
            .apply(&format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{ name: {name} }}\n"
            ))
            .await;
        assert!(ok, "create namespace {name}: {err}");
    }

    /// Creates the pod `name` in `ns` with `labels`; kubectl's result.
    async fn create_pod(
        &self,
        ns: &str,
        name: &str,
        labels: &[(&str, &str)],
    ) -> (bool, String, String) {
        let labels: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
            .collect();
        let pod = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"containers": [{"name": "app", "image": "example/app:1", "ports": [{"containerPort": 8080}]}]},
        });
        self.apply(&pod.to_string()).await
    }

    async fn pod(&self, ns: &str, name: &str) -> Value {
        self.kubectl
            .json(&["get", "pod", name, "-n", ns, "-o", "json"])
            .await
    }
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// The injected pod's spec is Kubernetes' own: decoded as its type and
/// encoded again, nothing is dropped or reshaped.
fn strict_pod(pod: &Value) {
    let spec: k8s_openapi::api::core::v1::PodSpec =
        serde_json::from_value(pod["spec"].clone()).expect("a valid PodSpec");
    let again = serde_json::to_value(&spec).expect("encodes");
    assert_eq!(
        again, pod["spec"],
        "a field was dropped or reshaped by the model"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labelled_namespace_gets_the_proxy_and_an_outage_fails_closed_but_never_for_kube_system()
{
    let c = Cluster::start().await;
    let ca = make_certs(c.path()).await;
    // Kubernetes 1.28: no native sidecars; the webhook reads /version.
    c.double.set_version(28);
    let webhook = Webhook::start(c.path(), &c.kubeconfig).await;
    for ns in ["apps", "plain", "kube-system", "sextant"] {
        c.namespace(ns).await;
    }
    c.install_webhook_config(&ca, webhook.addr).await;
    c.kubectl_ok(&["label", "namespace", "apps", "sextant-injection=enabled"])
        .await;

    // A pod of the labelled namespace: the proxy first, held until ready.
    let (ok, _, err) = c.create_pod("apps", "web-1", &[("app", "web")]).await;
    assert!(ok, "create web-1: {err}\nwebhook:\n{}", webhook.log());
    let pod = c.pod("apps", "web-1").await;
    strict_pod(&pod);
    assert_eq!(names(&pod["spec"]["containers"]), ["sextant-proxy", "app"]);
    assert_eq!(names(&pod["spec"]["initContainers"]), ["sextant-init"]);
    let hold = &pod["spec"]["containers"][0]["lifecycle"]["postStart"]["exec"]["command"];
    assert!(
        hold.as_array()
            .expect("postStart")
            .iter()
            .any(|a| a == "wait"),
        "the proxy holds the application's start: {hold}"
    );
    assert!(pod["metadata"]["annotations"]["sidecar.sextant.io/status"].is_string());
    assert_eq!(
        pod["metadata"]["labels"]["security.istio.io/tlsMode"],
        "istio"
    );
    assert_eq!(
        pod["metadata"]["labels"]["app"], "web",
        "the pod's own labels stay"
    );

    // Opted out, in the labelled namespace: not even called.
    let (ok, _, err) = c
        .create_pod("apps", "batch", &[("sidecar.sextant.io/inject", "false")])
        .await;
    assert!(ok, "{err}");
    assert_eq!(
        names(&c.pod("apps", "batch").await["spec"]["containers"]),
        ["app"]
    );

    // Elsewhere, the pod's own label opts it in; without it, nothing.
    let (ok, _, err) = c
        .create_pod("plain", "solo", &[("sidecar.sextant.io/inject", "true")])
        .await;
    assert!(ok, "{err}");
    assert_eq!(
        names(&c.pod("plain", "solo").await["spec"]["containers"]),
        ["sextant-proxy", "app"]
    );
    let (ok, _, err) = c.create_pod("plain", "other", &[]).await;
    assert!(ok, "{err}");
    assert_eq!(
        names(&c.pod("plain", "other").await["spec"]["containers"]),
        ["app"]
    );

    // Kubernetes 1.29: the webhook, started again, injects native sidecars.
    webhook.stop().await;
    c.double.set_version(29);
    let webhook = Webhook::start(c.path(), &c.kubeconfig).await;
    c.double
        .route_service("sextant", "sextant-webhook", 443, webhook.addr);
    let (ok, _, err) = c.create_pod("apps", "web-2", &[("app", "web")]).await;
    assert!(ok, "create web-2: {err}\nwebhook:\n{}", webhook.log());
    let pod = c.pod("apps", "web-2").await;
    strict_pod(&pod);
    assert_eq!(names(&pod["spec"]["containers"]), ["app"]);
    assert_eq!(
        names(&pod["spec"]["initContainers"]),
        ["sextant-init", "sextant-proxy"]
    );
    let proxy = &pod["spec"]["initContainers"][1];
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["startupProbe"]["httpGet"]["port"], 15021);

    assert_eq!(
        c.double.webhook_calls(),
        [
            (NS_HOOK.to_owned(), "patched".to_owned()),
            (OBJECT_HOOK.to_owned(), "patched".to_owned()),
            (NS_HOOK.to_owned(), "patched".to_owned()),
        ],
        "called for web-1, solo and web-2 only"
    );

    // The webhook is down: a pod that should have the proxy is refused...
    webhook.stop().await;
    let (ok, _, err) = c.create_pod("apps", "web-3", &[("app", "web")]).await;
    assert!(
        !ok,
        "a pod of a labelled namespace was created without its proxy"
    );
    assert!(
        err.contains(&format!("failed calling webhook \"{NS_HOOK}\"")),
        "kubectl says why: {err}"
    );
    let (found, _, _) = c.kubectl.run(&["get", "pod", "web-3", "-n", "apps"]).await;
    assert!(!found, "the refused pod does not exist");
    // ...but the cluster's own namespaces never wait for it, even labelled.
    for ns in ["kube-system", "sextant"] {
        c.kubectl_ok(&["label", "namespace", ns, "sextant-injection=enabled"])
            .await;
        let (ok, _, err) = c
            .create_pod(ns, "repair", &[("sidecar.sextant.io/inject", "true")])
            .await;
        assert!(ok, "a pod in {ns} must not depend on the webhook: {err}");
        assert_eq!(
            names(&c.pod(ns, "repair").await["spec"]["containers"]),
            ["app"]
        );
    }
    // And unlabelled namespaces are untouched by the outage.
    let (ok, _, err) = c.create_pod("plain", "later", &[]).await;
    assert!(ok, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_picks_up_a_renewed_certificate_without_a_restart() {
    let c = Cluster::start().await;
    let ca = make_certs(c.path()).await;
    c.double.set_version(33);
    let webhook = Webhook::start(c.path(), &c.kubeconfig).await;
    c.namespace("apps").await;
    c.kubectl_ok(&["label", "namespace", "apps", "sextant-injection=enabled"])
        .await;
    c.install_webhook_config(&ca, webhook.addr).await;
    let (ok, _, err) = c.create_pod("apps", "before", &[]).await;
    assert!(ok, "{err}");

    // A new CA and certificate replace the files (as a renewed Secret
    // does), and the configuration trusts only the new CA.
    let renewed = make_certs(c.path()).await;
    assert_ne!(renewed, ca);
    c.install_webhook_config(&renewed, webhook.addr).await;
    // The webhook checks its files every 5 s: within 15 s a pod is
    // created with the new certificate, by the same process.
    let start = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let (ok, _, err) = c.create_pod("apps", &format!("after-{n}"), &[]).await;
        if ok {
            break;
        }
        assert!(
            err.contains("failed calling webhook"),
            "refused for another reason: {err}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the renewed certificate was never served: {err}\n{}",
            webhook.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        webhook.log().contains("webhook certificate reloaded"),
        "{}",
        webhook.log()
    );
    let pod = c.pod("apps", &format!("after-{n}")).await;
    assert_eq!(
        names(&pod["spec"]["initContainers"]),
        ["sextant-init", "sextant-proxy"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_that_escaped_injection_are_listed_and_counted() {
    let c = Cluster::start().await;
    let ca = make_certs(c.path()).await;
    let webhook = Webhook::start(c.path(), &c.kubeconfig).await;
    c.namespace("apps").await;
    c.install_webhook_config(&ca, webhook.addr).await;
    // Created before the namespace was labelled: no proxy.
    let (ok, _, err) = c.create_pod("apps", "early", &[]).await;
    assert!(ok, "{err}");
    c.kubectl_ok(&["label", "namespace", "apps", "sextant-injection=enabled"])
        .await;
    let (ok, _, err) = c.create_pod("apps", "web", &[]).await;
    assert!(ok, "{err}");
    let (ok, _, err) = c
        .create_pod(
            "apps",
            "opted-out",
            &[("sidecar.sextant.io/inject", "false")],
        )
        .await;
    assert!(ok, "{err}");

    let audit = |template: PathBuf| {
        let kubeconfig = c.kubeconfig.clone();
        async move {
            let out = Command::new(BIN)
                .args(["inject", "--audit", "--native-sidecars", "always"])
                .arg("--template")
                .arg(template)
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .output()
                .await
                .expect("run sextant inject --audit");
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(!stderr.contains("error"), "the audit failed: {stderr}");
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        }
    };
    let current = c.path().join("template.yaml");
    let (ok, out) = audit(current.clone()).await;
    assert!(!ok, "escaped pods make the audit fail: {out}");
    assert_eq!(
        out.lines().skip(1).collect::<Vec<_>>(),
        ["apps\tearly\tno sidecar"],
        "{out}"
    );

    // A new template: the injected pod is now outdated too.
    let newer = c.path().join("newer.yaml");
    let text = std::fs::read_to_string(&current).expect("template");
    std::fs::write(
        &newer,
        text.replace("proxyLogLevel: warning", "proxyLogLevel: info"),
    )
    .expect("newer template");
    let (_, out) = audit(newer).await;
    let lines: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0], "apps\tearly\tno sidecar");
    assert!(
        lines[1].starts_with("apps\tweb\tsidecar from template "),
        "{out}"
    );

    // The control plane counts the same, as a metric.
    let current = current.to_str().expect("path").to_owned();
    let kubeconfig = c.kubeconfig.to_str().expect("path").to_owned();
    let sx = Sextant::start(
        c.path(),
        &[
            "--registries",
            "k8s",
            "--kubeconfig",
            &kubeconfig,
            "--k8s-injection-template",
            &current,
            "--k8s-injection-audit-every",
            "200ms",
        ],
    )
    .await;
    let missing = "sextant_injection_pods{cluster=\"Kubernetes\",state=\"missing\"}";
    let read = |body: &str, name: &str| -> Option<u64> {
        body.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    let start = Instant::now();
    loop {
        let (_, body) = sx.get("/metrics").await;
        if read(&body, missing) == Some(1) {
            let outdated = "sextant_injection_pods{cluster=\"Kubernetes\",state=\"outdated\"}";
            assert_eq!(read(&body, outdated), Some(0), "{body}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the metric never counted the escaped pod:\n{body}\n{}",
            sx.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The pod is replaced with an injected one: the count follows.
    c.kubectl_ok(&["delete", "pod", "early", "-n", "apps"])
        .await;
    let (ok, _, err) = c.create_pod("apps", "early", &[]).await;
    assert!(ok, "{err}");
    let start = Instant::now();
    loop {
        let (_, body) = sx.get("/metrics").await;
        if read(&body, missing) == Some(0) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the metric never followed:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(webhook);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_inject_rewrites_pod_templates_and_passes_everything_else_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifests = "\
apiVersion: v1
kind: ConfigMap
metadata: { name: settings, namespace: shop }
data: { mode: fast }
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: web, namespace: shop }
spec:
  selector: { matchLabels: { app: web } }
  template:
    metadata: { labels: { app: web } }
    spec:
      initContainers: [{ name: migrate, image: example/migrate:1 }]
      containers: [{ name: web, image: example/web:1 }]
---
apiVersion: batch/v1
kind: Job
metadata: { name: report, namespace: shop }
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{ name: report, image: example/report:1 }]
";
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, manifests).expect("manifests");
    let run = |args: Vec<String>| async move {
        let out = Command::new(BIN)
            .args(&args)
            .output()
            .await
            .expect("run sextant inject");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let path = file.to_str().expect("path").to_owned();
    let (ok, out, err) = run(vec![
        "inject".into(),
        "-f".into(),
        path.clone(),
        "--native-sidecars".into(),
        "always".into(),
    ])
    .await;
    assert!(ok, "{err}");
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&out)
        .map(|d| Value::deserialize(d).expect("YAML"))
        .collect();
    assert_eq!(docs.len(), 3, "{out}");
    assert_eq!(docs[0]["data"]["mode"], "fast");
    let web = &docs[1]["spec"]["template"]["spec"];
    assert_eq!(
        names(&web["initContainers"]),
        ["sextant-init", "sextant-proxy", "migrate"],
        "capture, then the proxy, then the pod's own init containers (their traffic is captured too)"
    );
    let _: k8s_openapi::api::apps::v1::Deployment =
        serde_json::from_value(docs[1].clone()).expect("a Deployment");
    let report = &docs[2]["spec"]["template"]["spec"];
    assert_eq!(report["initContainers"][1]["restartPolicy"], "Always");
    assert!(err.contains("Deployment shop/web: injected"), "{err}");

    // Without native sidecars, a Job's proxy would keep it from finishing
    // unless told: the container form, stopped with /quitquitquit.
    let (ok, out, err) = run(vec![
        "inject".into(),
        "-f".into(),
        path.clone(),
        "--native-sidecars".into(),
        "never".into(),
    ])
    .await;
    assert!(ok, "{err}");
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&out)
        .map(|d| Value::deserialize(d).expect("YAML"))
        .collect();
    assert_eq!(
        names(&docs[1]["spec"]["template"]["spec"]["containers"]),
        ["sextant-proxy", "web"]
    );

    // A broken document: a clear error, nothing printed as if injected.
    std::fs::write(&file, "apiVersion: v1\nkind: Pod\nmetadata: [oops\n").expect("broken");
    let (ok, out, err) = run(vec!["inject".into(), "-f".into(), path]).await;
    assert!(!ok);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("app.yaml"), "the error names the file: {err}");
}
