//! The Kubernetes API double, checked with kubectl: an independent client
//! (client-go inside) that must be able to discover, list, page, watch and
//! read errors from it exactly as from a real API server.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use sextant_testkit::k8s::{Crd, Kind, KubeDouble, Kubectl, objects};
use tokio::io::{AsyncBufReadExt, BufReader};

fn names(list: &Value) -> Vec<String> {
    let mut v: Vec<String> = list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {list}"))
        .iter()
        .map(|i| {
            i["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    v.sort();
    v
}

fn seed(double: &KubeDouble) {
    double.apply(objects::service("shop", "cart", &[("http", 80, 8080)]));
    double.apply(objects::service("shop", "pay", &[("grpc", 9000, 9000)]));
    double.apply(objects::service("ops", "grafana", &[("http", 3000, 3000)]));
    double.apply(objects::slice(
        "shop",
        "cart-abc12",
        "cart",
        &[("http", 8080)],
        vec![objects::endpoint(
            "10.1.0.1",
            Some("node-a"),
            Some("zone-a"),
        )],
    ));
    double.apply(objects::node("node-a", "region-1", "zone-a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_discovers_lists_pages_and_filters() {
    let double = KubeDouble::start().await;
    seed(&double);
    let k = Kubectl::new(&double);

    let all = k.json(&["get", "svc", "-A", "-o", "json"]).await;
    assert_eq!(names(&all), ["cart", "grafana", "pay"]);
    // Typed decoding inside kubectl needs kind/apiVersion from the list.
    assert_eq!(all["items"][0]["kind"], "Service", "{all}");

    let shop = k
        .json(&["get", "services", "-n", "shop", "-o", "json"])
        .await;
    assert_eq!(names(&shop), ["cart", "pay"]);

    // Pages of one: kubectl follows `continue` to the end.
    let paged = k
        .json(&["get", "svc", "-A", "--chunk-size=1", "-o", "json"])
        .await;
    assert_eq!(names(&paged), ["cart", "grafana", "pay"]);
    assert!(
        double
            .requests()
            .iter()
            .any(|r| r.contains("limit=1") && r.contains("continue=")),
        "{:?}",
        double.requests()
    );

    let selected = k
        .json(&[
            "get",
            "svc",
            "-A",
            "-l",
            "app in (pay,grafana)",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(names(&selected), ["grafana", "pay"]);
    let fields = k
        .json(&[
            "get",
            "svc",
            "-A",
            "--field-selector",
            "metadata.namespace!=ops",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(names(&fields), ["cart", "pay"]);

    let slices = k
        .json(&["get", "endpointslices", "-n", "shop", "-o", "json"])
        .await;
    assert_eq!(names(&slices), ["cart-abc12"]);
    assert_eq!(
        slices["items"][0]["endpoints"][0]["addresses"][0],
        "10.1.0.1"
    );
    let one = k
        .json(&["get", "svc", "cart", "-n", "shop", "-o", "json"])
        .await;
    assert_eq!(one["spec"]["ports"][0]["targetPort"], 8080);
    let nodes = k.json(&["get", "nodes", "-o", "json"]).await;
    assert_eq!(names(&nodes), ["node-a"]);

    // Human output, and the plain --server form from the issue.
    let (ok, out, err) = k.run(&["get", "svc", "-A"]).await;
    assert!(
        ok && out.contains("grafana") && out.contains("shop"),
        "{out}{err}"
    );
    let (ok, out, err) = k
        .run(&["--server", &double.url(), "get", "svc", "-A", "-o", "name"])
        .await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");

    let (ok, _, err) = k.run(&["get", "svc", "missing", "-n", "shop"]).await;
    assert!(!ok && err.contains("not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_watch_sees_changes() {
    let double = KubeDouble::start().await;
    seed(&double);
    let k = Kubectl::new(&double);
    let mut child = k
        .command(&["get", "endpointslices", "-A", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("kubectl -w: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("kubectl -w printed nothing for 30 s"))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("kubectl -w ended"))
    };
    let header = next().await;
    assert!(header.starts_with("EVENT"), "{header}");
    let first = next().await;
    assert!(
        first.contains("ADDED") && first.contains("cart-abc12"),
        "{first}"
    );

    double.apply(objects::slice(
        "shop",
        "pay-xyz98",
        "pay",
        &[("grpc", 9000)],
        vec![objects::endpoint("10.1.0.2", None, None)],
    ));
    let added = next().await;
    assert!(
        added.contains("ADDED") && added.contains("pay-xyz98"),
        "{added}"
    );
    double.delete(Kind::EndpointSlice, "shop", "cart-abc12");
    let deleted = next().await;
    assert!(
        deleted.contains("DELETED") && deleted.contains("cart-abc12"),
        "{deleted}"
    );
    let _ = child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_watch_speaks_bookmarks_timeouts_and_410() {
    let double = KubeDouble::start().await;
    seed(&double);
    double.bookmark_every(Duration::from_millis(200));
    let k = Kubectl::new(&double);
    let rv = double.resource_version();

    // From the current version with bookmarks: ends after timeoutSeconds.
    let path = format!(
        "/api/v1/services?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=1"
    );
    let (ok, out, err) = k.run(&["get", "--raw", &path]).await;
    assert!(ok, "{err}");
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert!(!events.is_empty(), "no bookmark in 1 s");
    assert!(events.iter().all(|e| e["type"] == "BOOKMARK"), "{out}");
    assert_eq!(
        events[0]["object"]["metadata"]["resourceVersion"],
        rv.to_string()
    );

    // After compaction, the same version is too old: an ERROR event with 410.
    double.compact();
    let path = format!("/api/v1/services?watch=true&resourceVersion={rv}");
    let (_, out, err) = k.run(&["get", "--raw", &path]).await;
    let event: Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{out}{err}: {e}"));
    assert_eq!(event["type"], "ERROR");
    assert_eq!(event["object"]["code"], 410);
    assert_eq!(event["object"]["reason"], "Expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_resources_answer_403_like_rbac() {
    let double = KubeDouble::start().await;
    seed(&double);
    double.deny(Kind::EndpointSlice, true);
    let k = Kubectl::new(&double);
    let (ok, _, err) = k.run(&["get", "endpointslices", "-A"]).await;
    assert!(!ok, "a denied list succeeded");
    assert!(
        err.contains("forbidden")
            && err.contains(
                "cannot list resource \"endpointslices\" in API group \"discovery.k8s.io\""
            ),
        "{err}"
    );
    let (ok, _, _) = k.run(&["get", "svc", "-A"]).await;
    assert!(ok, "services are not denied");
}

/// The repository's example rules, as users apply them.
fn example(name: &str) -> String {
    format!(
        "{}/../../examples/kubernetes/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_applies_edits_and_deletes_rule_kinds_once_installed() {
    let double = KubeDouble::start().await;
    seed(&double);
    let k = Kubectl::new(&double);
    let vs = example("reviews-virtual-service.yaml");

    // Before the CRDs exist the kinds are unknown, as on a cluster without Istio.
    let (ok, _, err) = k.run(&["get", "virtualservices", "-A"]).await;
    assert!(!ok && err.contains("doesn't have a resource type"), "{err}");
    double.install(Crd::Istio);
    double.install(Crd::GatewayApi);

    let (ok, out, err) = k
        .run(&[
            "apply",
            "--validate=false",
            "-f",
            &vs,
            "-f",
            &example("reviews-destination-rule.yaml"),
            "-f",
            &example("ratings-httproute.yaml"),
            "-f",
            &example("default-sidecar.yaml"),
        ])
        .await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("sidecar.networking.istio.io/default created"),
        "{out}"
    );
    assert!(
        out.contains("virtualservice.networking.istio.io/reviews created"),
        "{out}"
    );
    let all = k
        .json(&["get", "virtualservices", "-A", "-o", "json"])
        .await;
    assert_eq!(names(&all), ["reviews"]);
    assert_eq!(all["items"][0]["apiVersion"], "networking.istio.io/v1");
    let (ok, out, _) = k.run(&["get", "dr", "-n", "default", "-o", "name"]).await;
    assert!(
        ok && out.trim() == "destinationrule.networking.istio.io/reviews",
        "{out}"
    );
    let stored = double
        .get(Kind::VirtualService, "default", "reviews")
        .unwrap_or_else(|| panic!("not stored"));
    assert_eq!(stored["spec"]["http"][1]["route"][0]["weight"], 50);
    assert_eq!(stored["metadata"]["generation"], 1);

    // Re-applying an edited file is a merge patch: the spec changes, the
    // generation moves.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let edited = dir.path().join("vs.yaml");
    let text = std::fs::read_to_string(&vs).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        &edited,
        text.replace("weight: 50", "weight: 20")
            .replacen("weight: 20", "weight: 80", 1),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (ok, out, err) = k
        .run(&["apply", "--validate=false", "-f", &edited.to_string_lossy()])
        .await;
    assert!(ok && out.contains("configured"), "{out}{err}");
    let stored = double
        .get(Kind::VirtualService, "default", "reviews")
        .unwrap_or_else(|| panic!("not stored"));
    assert_eq!(stored["spec"]["http"][1]["route"][0]["weight"], 80);
    assert_eq!(stored["spec"]["http"][1]["route"][1]["weight"], 20);
    assert_eq!(stored["metadata"]["generation"], 2);

    // Status goes through the subresource only, and survives spec writes.
    let (ok, _, err) = k
        .run(&[
            "patch",
            "httproute",
            "ratings-split",
            "-n",
            "default",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"parents":[{"controllerName":"example.com/c","parentRef":{"kind":"Service","name":"ratings"},"conditions":[{"type":"Accepted","status":"True","reason":"Accepted","message":"","lastTransitionTime":"2026-01-01T00:00:00Z","observedGeneration":1}]}]}}"#,
        ])
        .await;
    assert!(ok, "{err}");
    let (ok, _, err) = k
        .run(&[
            "patch",
            "httproute",
            "ratings-split",
            "-n",
            "default",
            "--type=merge",
            "-p",
            r#"{"spec":{"rules":[{"backendRefs":[{"name":"ratings-v1","port":9080}]}]},"status":null}"#,
        ])
        .await;
    assert!(ok, "{err}");
    let route = k
        .json(&[
            "get",
            "httproute",
            "ratings-split",
            "-n",
            "default",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(
        route["status"]["parents"][0]["controllerName"], "example.com/c",
        "{route}"
    );
    assert_eq!(route["metadata"]["generation"], 2, "{route}");
    let (ok, _, err) = k
        .run(&[
            "patch",
            "httproute",
            "ratings-split",
            "-n",
            "default",
            "--type=strategic",
            "-p",
            "{}",
        ])
        .await;
    assert!(
        !ok && err.contains("415") || err.contains("unknown format"),
        "{err}"
    );

    // A stale resourceVersion is a conflict.
    let (ok, _, err) = k
        .run(&[
            "patch",
            "httproute",
            "ratings-split",
            "-n",
            "default",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"metadata":{"resourceVersion":"1"},"status":{}}"#,
        ])
        .await;
    assert!(!ok && err.contains("the object has been modified"), "{err}");

    let (ok, out, err) = k.run(&["delete", "-f", &vs]).await;
    assert!(ok && out.contains("deleted"), "{out}{err}");
    let (ok, out, _) = k.run(&["get", "vs", "-A", "-o", "name"]).await;
    assert!(ok && out.trim().is_empty(), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_watches_routes_and_reads_pods() {
    let double = KubeDouble::start().await;
    double.install(Crd::GatewayApi);
    double.apply(objects::pod(
        "shop",
        "cart-7d9f-abcde",
        "10.1.0.1",
        "node-a",
        &[("app", "cart"), ("version", "v1")],
    ));
    let k = Kubectl::new(&double);
    let pods = k.json(&["get", "pods", "-n", "shop", "-o", "json"]).await;
    assert_eq!(names(&pods), ["cart-7d9f-abcde"]);
    assert_eq!(pods["items"][0]["metadata"]["labels"]["version"], "v1");
    assert_eq!(pods["items"][0]["status"]["podIP"], "10.1.0.1");

    let mut child = k
        .command(&[
            "get",
            "httproutes",
            "-A",
            "-w",
            "--output-watch-events",
            "-o",
            "name",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("kubectl -w: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = BufReader::new(stdout).lines();
    // The watch is open once kubectl has asked for it.
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
    while !double
        .requests()
        .iter()
        .any(|r| r.contains("/httproutes?") && r.contains("watch="))
    {
        assert!(
            tokio::time::Instant::now() < until,
            "kubectl never watched: {:?}",
            double.requests()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let route: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(example("ratings-httproute.yaml"))
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    double.apply(&route);
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("kubectl -w printed nothing for 30 s"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("kubectl -w ended"));
    assert!(line.contains("ratings-split"), "{line}");
    let _ = child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_token_reviews() {
    let double = KubeDouble::start().await;
    double.add_token("tok-1", "system:serviceaccount:shop:web", &["sextant"]);
    let k = Kubectl::new(&double);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let review = |token: &str, audience: &str| {
        format!(
            "apiVersion: authentication.k8s.io/v1\nkind: TokenReview\nspec:\n  token: {token}\n  audiences: [{audience}]\n"
        )
    };
    let mut answers = Vec::new();
    for (name, token, audience) in [
        ("good", "tok-1", "sextant"),
        ("audience", "tok-1", "vault"),
        ("unknown", "nope", "sextant"),
    ] {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, review(token, audience)).unwrap_or_else(|e| panic!("{e}"));
        answers.push(
            k.json(&[
                "create",
                "--validate=false",
                "-f",
                &path.to_string_lossy(),
                "-o",
                "json",
            ])
            .await,
        );
    }
    assert_eq!(
        answers[0]["status"]["authenticated"], true,
        "{}",
        answers[0]
    );
    assert_eq!(
        answers[0]["status"]["user"]["username"],
        "system:serviceaccount:shop:web"
    );
    assert_eq!(
        answers[1]["status"]["authenticated"], false,
        "{}",
        answers[1]
    );
    assert_eq!(
        answers[2]["status"]["authenticated"], false,
        "{}",
        answers[2]
    );
    assert!(
        answers[2]["status"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
}

/// A webhook for the double to call: HTTPS with a certificate for
/// `127.0.0.1` from its own CA, answering each AdmissionReview as `answer`
/// says (given the request), after `delay`. Returns its address and the
/// CA as a caBundle.
async fn tiny_webhook(
    delay: Duration,
    answer: fn(&Value) -> Value,
) -> (std::net::SocketAddr, String, tokio::task::JoinHandle<()>) {
    use base64::Engine;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca_key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let mut ca =
        rcgen::CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap_or_else(|e| panic!("{e}"));
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("{e}"));
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap_or_else(|e| panic!("{e}"));
    let cert = params
        .signed_by(&key, &issuer)
        .unwrap_or_else(|e| panic!("{e}"));
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|e| panic!("{e}"))
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut raw = Vec::new();
                let mut buf = [0u8; 8192];
                // Headers, then Content-Length bytes of body.
                let body = loop {
                    let Ok(n) = tls.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    raw.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&raw).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().to_owned())
                            })
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        if body.len() >= length {
                            break body.to_owned();
                        }
                    }
                };
                tokio::time::sleep(delay).await;
                let review: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let mut response = answer(&review);
                response["uid"] = review["request"]["uid"].clone();
                let out = serde_json::json!({
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "response": response,
                })
                .to_string();
                let _ = tls
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{out}",
                            out.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca_cert.pem());
    (addr, bundle, task)
}

fn webhook_config(name: &str, url: &str, ca: &str, extra: &str) -> String {
    format!(
        "apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{ name: {name} }}
webhooks:
  - name: {name}.example.com
    clientConfig: {{ url: \"{url}\", caBundle: \"{ca}\" }}
    rules: [{{ operations: [CREATE], apiGroups: [\"\"], apiVersions: [v1], resources: [pods] }}]
    sideEffects: None
    admissionReviewVersions: [v1]
{extra}"
    )
}

fn pod_yaml(ns: &str, name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{ name: {name}, namespace: {ns}, labels: {{ {labels} }} }}\nspec:\n  containers: [{{ name: app, image: example/app:1 }}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_labels_namespaces_and_the_double_calls_mutating_webhooks() {
    let double = KubeDouble::start().await;
    let k = Kubectl::new(&double);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let apply = |name: &str, text: String| {
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        let k = &k;
        async move {
            k.run(&["apply", "--validate=false", "-f", &path.to_string_lossy()])
                .await
        }
    };

    // Namespaces: created, labelled (merge patch), listed by label, with
    // the name label the API server adds.
    // `kubectl create namespace` sends protobuf, which the double does
    // not read: it refuses it as the API server refuses a body it cannot
    // decode, and namespaces are applied as YAML.
    let (ok, _, err) = k.run(&["create", "namespace", "proto"]).await;
    assert!(!ok && err.contains("UnsupportedMediaType"), "{err}");
    for ns in ["apps", "plain"] {
        let (ok, _, err) = apply(
            ns,
            format!("apiVersion: v1\nkind: Namespace\nmetadata: {{ name: {ns} }}\n"),
        )
        .await;
        assert!(ok, "{err}");
    }
    let (ok, _, err) = k.run(&["label", "namespace", "apps", "inject=on"]).await;
    assert!(ok, "{err}");
    let labelled = k
        .json(&["get", "namespaces", "-l", "inject=on", "-o", "json"])
        .await;
    assert_eq!(names(&labelled), ["apps"]);
    assert_eq!(
        labelled["items"][0]["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "apps"
    );

    // A webhook that adds a label, selected by namespace label.
    let (addr, ca, _hook) = tiny_webhook(Duration::ZERO, |_| {
        let patch = r#"[{"op":"add","path":"/metadata/labels/mutated","value":"yes"}]"#;
        use base64::Engine;
        serde_json::json!({
            "allowed": true,
            "patchType": "JSONPatch",
            "patch": base64::engine::general_purpose::STANDARD.encode(patch),
        })
    })
    .await;
    let url = format!("https://{addr}/mutate");
    let (ok, _, err) = apply(
        "mutate",
        webhook_config(
            "mutate",
            &url,
            &ca,
            "    namespaceSelector: { matchLabels: { inject: \"on\" } }\n    objectSelector: { matchExpressions: [{ key: skip, operator: DoesNotExist }] }\n",
        ),
    )
    .await;
    assert!(ok, "{err}");
    let listed = k
        .json(&["get", "mutatingwebhookconfigurations", "-o", "json"])
        .await;
    assert_eq!(names(&listed), ["mutate"]);

    let (ok, _, err) = apply("a", pod_yaml("apps", "a", "app: a")).await;
    assert!(ok, "{err}");
    let a = k
        .json(&["get", "pod", "a", "-n", "apps", "-o", "json"])
        .await;
    assert_eq!(a["metadata"]["labels"]["mutated"], "yes", "{a}");
    for (name, ns, labels) in [("b", "plain", "app: b"), ("c", "apps", "skip: \"1\"")] {
        let (ok, _, err) = apply(name, pod_yaml(ns, name, labels)).await;
        assert!(ok, "{err}");
        let p = k.json(&["get", "pod", name, "-n", ns, "-o", "json"]).await;
        assert!(
            p["metadata"]["labels"]["mutated"].is_null(),
            "{name} was not selected: {p}"
        );
    }
    assert_eq!(
        double.webhook_calls(),
        [("mutate.example.com".to_owned(), "patched".to_owned())]
    );

    // The caBundle is what the double trusts: another CA fails the call.
    // (Applying a changed built-in object again is a strategic merge
    // patch, which the double does not serve: it is deleted and applied.)
    let (_, other_ca, _other) =
        tiny_webhook(Duration::ZERO, |_| serde_json::json!({"allowed": true})).await;
    let (ok, _, err) = k
        .run(&["delete", "mutatingwebhookconfiguration", "mutate"])
        .await;
    assert!(ok, "{err}");
    let (ok, _, err) = apply(
        "mutate",
        webhook_config(
            "mutate",
            &url,
            &other_ca,
            "    namespaceSelector: { matchLabels: { inject: \"on\" } }\n",
        ),
    )
    .await;
    assert!(ok, "{err}");
    let (ok, _, err) = apply("d", pod_yaml("apps", "d", "app: d")).await;
    assert!(!ok, "a webhook with an untrusted certificate was believed");
    assert!(
        err.contains("failed calling webhook \"mutate.example.com\""),
        "{err}"
    );
    let (ok, _, err) = k
        .run(&["delete", "mutatingwebhookconfiguration", "mutate"])
        .await;
    assert!(ok, "{err}");

    // A slow webhook: timeoutSeconds bounds the wait; Fail refuses,
    // Ignore creates the pod as it was.
    let (slow, slow_ca, _slow) = tiny_webhook(
        Duration::from_secs(30),
        |_| serde_json::json!({"allowed": true}),
    )
    .await;
    let slow_url = format!("https://{slow}/");
    for (policy, created) in [("Fail", false), ("Ignore", true)] {
        let _ = k
            .run(&["delete", "mutatingwebhookconfiguration", "slow"])
            .await;
        let (ok, _, err) = apply(
            "slow",
            webhook_config(
                "slow",
                &slow_url,
                &slow_ca,
                &format!("    timeoutSeconds: 1\n    failurePolicy: {policy}\n"),
            ),
        )
        .await;
        assert!(ok, "{err}");
        let name = format!("slow-{}", policy.to_lowercase());
        let start = std::time::Instant::now();
        let (ok, _, err) = apply(&name, pod_yaml("plain", &name, "app: slow")).await;
        assert_eq!(ok, created, "{policy}: {err}");
        // Bounded by the webhook's timeout, far below its 30 s delay.
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{policy}: waited {:?}",
            start.elapsed()
        );
        if !created {
            assert!(err.contains("context deadline exceeded"), "{err}");
        }
    }
    let calls = double.webhook_calls();
    assert!(
        calls[calls.len() - 1].1.starts_with("failed, ignored:"),
        "{calls:?}"
    );

    // A webhook that denies: the create fails with its message.
    let (ok, _, err) = k
        .run(&["delete", "mutatingwebhookconfiguration", "slow"])
        .await;
    assert!(ok, "{err}");
    let (deny, deny_ca, _deny) = tiny_webhook(
        Duration::ZERO,
        |_| serde_json::json!({"allowed": false, "status": {"message": "no pods today"}}),
    )
    .await;
    let (ok, _, err) = apply(
        "deny",
        webhook_config("deny", &format!("https://{deny}/"), &deny_ca, ""),
    )
    .await;
    assert!(ok, "{err}");
    let (ok, _, err) = apply("e", pod_yaml("plain", "e", "app: e")).await;
    assert!(!ok);
    assert!(err.contains("denied the request: no pods today"), "{err}");
}
