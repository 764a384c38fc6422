//! Consul end to end, against the Consul API double (checked against
//! py-consul): a Consul-registered instance receives traffic through a real
//! Envoy, and a Consul service and a file service with the same hostname
//! (via --consul-hostname-template) are one cluster with both endpoints.
#![allow(clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::json;
use sextant_testkit::consul::ConsulDouble;
use sextant_testkit::peers::{Envoy, HttpBackend, status_change};

fn register(double: &ConsulDouble, id: &str, backend: &HttpBackend) {
    double.register(
        "node-1",
        "127.0.0.1",
        json!({ "ID": id, "Service": "web", "Address": "127.0.0.1", "Port": backend.addr.port(), "Meta": { "protocol": "http" } }),
        vec![json!({ "CheckID": format!("check-{id}"), "Status": "passing" })],
    );
}

/// Sextant on `--registries file,consul`, Consul's services named
/// `SERVICE.test.svc` so that they meet the file's.
async fn file_then_consul(
    dir: &std::path::Path,
    file: &std::path::Path,
    double: &ConsulDouble,
) -> Sextant {
    Sextant::start(
        dir,
        &[
            "--registries",
            "file,consul",
            "--file",
            file.to_str().expect("path"),
            "--consul-addr",
            &double.url(),
            "--consul-hostname-template",
            "{service}.test.svc",
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consul_instance_gets_traffic_until_its_check_fails() {
    let double = ConsulDouble::start().await;
    let backend = HttpBackend::start("from-consul").await;
    register(&double, "web-1", &backend);
    let dir = tempfile::tempdir().expect("tempdir");
    let sx = Sextant::start(
        dir.path(),
        &["--registries", "consul", "--consul-addr", &double.url()],
    )
    .await;
    let envoy = Envoy::start(&bootstrap(sx.xds, "consul-e2e", false).await).await;
    envoy.wait_live().await;
    let seen = bodies(sx.outbound, "web.service.consul", 200, |s| {
        s.contains("from-consul")
    })
    .await;
    assert!(seen.contains("from-consul"), "{}", sx.log());

    double.set_check("node-1", "check-web-1", "critical");
    let status = status_change(sx.outbound, "web.service.consul", 200).await;
    assert_eq!(status, 503, "a critical instance gets no traffic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consul_service_and_a_file_service_merge_into_one_cluster() {
    let double = ConsulDouble::start().await;
    let (from_file, from_consul) = (
        HttpBackend::start("from-file").await,
        HttpBackend::start("from-consul").await,
    );
    register(&double, "web-1", &from_consul);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    std::fs::write(
        &file,
        format!(
            "services:\n  - hostname: web.test.svc\n    ports: [{{ name: http, port: 8080 }}]\n    endpoints: [{{ address: 127.0.0.1, ports: {{ http: {} }} }}]\n",
            from_file.addr.port()
        ),
    )
    .expect("write");
    let sx = file_then_consul(dir.path(), &file, &double).await;
    let config = sx.json("/debug/configz").await;
    let web = &config["services"]["web.test.svc"];
    assert_eq!(web["origins"], json!(["file/main", "consul/main"]));
    assert_eq!(web["endpoints"].as_array().map(Vec::len), Some(2));
    // Consul has no service port of its own, only instance ports: the
    // disagreement is reported, and endpoints still map by port name.
    let reg = sx.json("/debug/registryz").await;
    let detail = reg["conflicts"][0]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        detail.starts_with("file/main has [http:8080/HTTP], consul/main has [http:"),
        "{reg}"
    );
    // And the journal says when it appeared, once.
    let events = sx.json("/debug/events").await;
    let conflicts: Vec<&serde_json::Value> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["kind"] == "conflict")
        .collect();
    assert_eq!(conflicts.len(), 1, "{events}");
    assert_eq!(conflicts[0]["subject"], "web.test.svc");
    assert!(
        conflicts[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("file/main is served, consul/main disagrees")),
        "{events}"
    );

    let envoy = Envoy::start(&bootstrap(sx.xds, "merge-e2e", false).await).await;
    envoy.wait_live().await;
    let seen = bodies(sx.outbound, "web.test.svc", 200, |s| s.len() == 2).await;
    assert_eq!(
        seen,
        BTreeSet::from(["from-consul".into(), "from-file".into()]),
        "{}",
        sx.log()
    );
    // `sextant describe` names both registries, the conflict, and the
    // Envoy that receives the service.
    let described = describe(&sx, "web.test.svc").await;
    for line in [
        "From:       file/main (synced), consul/main (synced)",
        "Endpoints:  2, 2 healthy",
        "ports: file/main is served, consul/main disagrees",
        "Proxies:    1 receive it on 1 replica(s)",
        "merge-e2e",
    ] {
        assert!(described.contains(line), "{line:?} missing:\n{described}");
    }
    let (_, clusters) = envoy.admin_get("/clusters").await;
    let web_clusters: BTreeSet<&str> = clusters
        .lines()
        .filter_map(|l| l.split("::").next())
        .filter(|c| c.ends_with("||web.test.svc"))
        .collect();
    assert_eq!(
        web_clusters,
        BTreeSet::from(["outbound|8080||web.test.svc"]),
        "one cluster"
    );
}

/// The migration story the README tells: `sextant --registries k8s,consul
/// --consul-hostname-template '{service}.default.svc.cluster.local'`.
/// Kubernetes Service `web` (port `http` 80 to the pods' port, and a
/// metrics port) with one pod; in Consul, `web` on a VM listening on the
/// pods' port, under the port Consul names `tcp`, and one old instance on
/// another port. One cluster carries the pod and the VM, through a real
/// Envoy; the old instance is reported as dropped, with why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_and_consul_instances_of_one_service_share_its_cluster() {
    use sextant_testkit::k8s::{KubeDouble, objects};
    const HOST: &str = "web.default.svc.cluster.local";
    let pod = HttpBackend::start("pod").await;
    let port = pod.addr.port();
    // The VM listens on the same port as the pod, at another address.
    let vm = HttpBackend::start_at("vm", std::net::SocketAddr::from(([127, 0, 0, 2], port))).await;

    let kube = KubeDouble::start().await;
    kube.apply(objects::node("node-a", "region-a", "zone-a"));
    kube.apply(objects::service(
        "default",
        "web",
        &[("http", 80, i32::from(port)), ("metrics", 9100, 9100)],
    ));
    let ep = objects::endpoint("127.0.0.1", Some("node-a"), Some("zone-a"));
    kube.apply(objects::slice(
        "default",
        "web-1",
        "web",
        &[("http", i32::from(port)), ("metrics", 9100)],
        vec![ep],
    ));
    let consul = ConsulDouble::start().await;
    consul.register(
        "vm-1",
        "127.0.0.2",
        json!({ "ID": "web-vm", "Service": "web", "Address": "127.0.0.2", "Port": port }),
        vec![json!({ "CheckID": "check-vm", "Status": "passing" })],
    );
    consul.register(
        "vm-2",
        "127.0.0.3",
        json!({ "ID": "web-old", "Service": "web", "Address": "127.0.0.3", "Port": 7 }),
        vec![json!({ "CheckID": "check-old", "Status": "passing" })],
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = kube.kubeconfig(dir.path(), "double");
    let sx = Sextant::start(
        dir.path(),
        &[
            "--registries",
            "k8s,consul",
            "--kubeconfig",
            kubeconfig.to_str().expect("path"),
            "--consul-addr",
            &consul.url(),
            "--consul-hostname-template",
            "{service}.default.svc.cluster.local",
        ],
    )
    .await;
    let envoy = Envoy::start(&bootstrap(sx.xds, "migration", false).await).await;
    envoy.wait_live().await;
    let seen = bodies(sx.outbound, HOST, 200, |s| s.len() == 2).await;
    assert_eq!(
        seen,
        BTreeSet::from(["pod".into(), "vm".into()]),
        "{}",
        sx.log()
    );
    let (_, clusters) = envoy.admin_get("/clusters").await;
    assert!(
        clusters.contains(&format!("outbound|80||{HOST}::127.0.0.2:{port}::")),
        "the VM is an endpoint of the Kubernetes service's cluster:\n{clusters}"
    );
    assert!(vm.hits() > 0);

    let reg = sx.json("/debug/registryz").await;
    let dropped: Vec<&serde_json::Value> = reg["conflicts"]
        .as_array()
        .expect("conflicts")
        .iter()
        .filter(|c| c["field"] == "dropped_endpoints")
        .collect();
    assert_eq!(dropped.len(), 1, "{reg}");
    assert_eq!(dropped[0]["hostname"], HOST);
    assert_eq!(dropped[0]["endpoints_dropped"], 1);
    let detail = dropped[0]["detail"].as_str().expect("detail");
    assert!(
        detail.contains(&format!("http:80 (target {port})"))
            && detail.contains("sextant-port-name"),
        "{detail}"
    );
    let other = dropped[0]["other"].as_str().expect("registry");
    let (_, metrics) = sx.get("/metrics").await;
    let line = format!("sextant_dropped_endpoints{{service=\"{HOST}\",registry=\"{other}\"}} 1");
    assert!(
        metrics.lines().any(|l| l == line),
        "missing {line}:\n{metrics}"
    );
}

/// Consul's own traffic rules through Envoy: a resolver's subsets (by the
/// instances' meta), a 50/50 splitter measured, a router header match; an
/// edit of the splitter moves traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_config_entries_steer_envoy() {
    let double = ConsulDouble::start().await;
    let (v1, v2) = (
        HttpBackend::start("v1").await,
        HttpBackend::start("v2").await,
    );
    for (id, backend, version) in [("web-1", &v1, "v1"), ("web-2", &v2, "v2")] {
        double.register(
            "node-1",
            "127.0.0.1",
            json!({ "ID": id, "Service": "web", "Address": "127.0.0.1", "Port": backend.addr.port(),
                    "Meta": { "version": version } }),
            vec![json!({ "CheckID": format!("check-{id}"), "Status": "passing" })],
        );
    }
    // The protocol comes from service-defaults; subset v2's filter is no
    // label selector, so Sextant evaluates it on each instance.
    double
        .set_config_entry(json!({ "Kind": "service-defaults", "Name": "web", "Protocol": "http" }));
    double.set_config_entry(json!({
        "Kind": "service-resolver", "Name": "web",
        "Subsets": { "v1": { "Filter": "Service.Meta.version == v1" },
                     "v2": { "Filter": "Service.Meta.version == v2 or Service.Tags contains canary" } }
    }));
    double.set_config_entry(json!({
        "Kind": "service-splitter", "Name": "web",
        "Splits": [ { "Weight": 50, "ServiceSubset": "v1" }, { "Weight": 50, "ServiceSubset": "v2" } ]
    }));
    double.set_config_entry(json!({
        "Kind": "service-router", "Name": "web",
        "Routes": [ { "Match": { "HTTP": { "Header": [ { "Name": "x-user", "Exact": "alice" } ] } },
                      "Destination": { "ServiceSubset": "v2" } } ]
    }));
    let dir = tempfile::tempdir().expect("tempdir");
    let sx = Sextant::start(
        dir.path(),
        &["--registries", "consul", "--consul-addr", &double.url()],
    )
    .await;
    let envoy = Envoy::start(&bootstrap(sx.xds, "consul-rules", false).await).await;
    envoy.wait_live().await;
    let host = "web.service.consul";
    let alice = [("x-user", "alice")];
    assert_routes_to(&sx, host, &alice, "v2").await;
    let to_v1 = count_body(sx.outbound, host, &[], 2000, "v1").await;
    eprintln!("consul 50/50 splitter: {to_v1} of 2000 to v1");
    assert!(
        (900..=1100).contains(&to_v1),
        "50/50 gave {to_v1}/2000 to v1"
    );

    double.set_config_entry(json!({
        "Kind": "service-splitter", "Name": "web",
        "Splits": [ { "Weight": 100, "ServiceSubset": "v1" } ]
    }));
    let in_force = until_all(sx.outbound, host, "v1", std::time::Duration::from_secs(10)).await;
    eprintln!("consul splitter edit in force after {in_force:?}");
    assert!(in_force.is_some(), "{}", sx.log());

    // The discovery chain: another service's router sends /api to web,
    // naming no subset; the request goes on through web's splitter (now
    // all to v2), not to web's instances at large.
    let front = HttpBackend::start("front").await;
    double.register(
        "node-1",
        "127.0.0.1",
        json!({ "ID": "front-1", "Service": "front", "Address": "127.0.0.1", "Port": front.addr.port() }),
        vec![json!({ "CheckID": "check-front-1", "Status": "passing" })],
    );
    double.set_config_entry(
        json!({ "Kind": "service-defaults", "Name": "front", "Protocol": "http" }),
    );
    double.set_config_entry(json!({
        "Kind": "service-router", "Name": "front",
        "Routes": [ { "Match": { "HTTP": { "PathPrefix": "/" } }, "Destination": { "Service": "web" } } ]
    }));
    double.set_config_entry(json!({
        "Kind": "service-splitter", "Name": "web",
        "Splits": [ { "Weight": 100, "ServiceSubset": "v2" } ]
    }));
    let through = until_all(
        sx.outbound,
        "front.service.consul",
        "v2",
        std::time::Duration::from_secs(10),
    )
    .await;
    if through.is_none() {
        let config = sx.json("/debug/configz").await;
        let registryz = sx.json("/debug/registryz").await;
        panic!(
            "front's route does not follow web's splitter:\n{}\n{registryz}\n{}",
            config["rules"],
            sx.log()
        );
    }
    assert_eq!(
        count_body(sx.outbound, "front.service.consul", &[], 50, "v2").await,
        50
    );
    assert_eq!(envoy.stat_sum("update_rejected").await, 0);
}

/// Rules for one host from two sources (a route rule in a file, a Consul
/// splitter): the first in `--registries` order is in force, the other is a
/// conflict on /debug/registryz and in `sextant_rule_conflicts`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_from_two_sources_follow_the_registries_order() {
    let double = ConsulDouble::start().await;
    let backend = HttpBackend::start("web").await;
    register(&double, "web-1", &backend);
    double.set_config_entry(json!({
        "Kind": "service-splitter", "Name": "web",
        "Splits": [ { "Weight": 100, "Service": "web" } ]
    }));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rules.yaml");
    std::fs::write(
        &file,
        "routes:\n  - name: web\n    hosts: [web.test.svc]\n    http:\n      - route: [{ destination: { host: web.test.svc } }]\n        timeout: 3s\n",
    )
    .expect("write");
    let sx = file_then_consul(dir.path(), &file, &double).await;
    let mut conflict = serde_json::Value::Null;
    for _ in 0..100 {
        let reg = sx.json("/debug/registryz").await;
        if let Some(c) = reg["conflicts"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["field"] == "route_rule"))
        {
            conflict = c.clone();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(conflict["hostname"], "web.test.svc", "{conflict}");
    assert_eq!(conflict["winner"], "file/main");
    assert_eq!(conflict["other"], "consul/main");
    let config = sx.json("/debug/configz").await;
    let in_force = &config["services"]["web.test.svc"]["rules"][0];
    assert_eq!(in_force["key"]["name"], "web", "{in_force}");
    assert_eq!(
        in_force["spec"]["route"]["http"][0]["timeout"], "3s",
        "the file's rule is in force"
    );
    let (_, metrics) = sx.get("/metrics").await;
    assert!(
        metrics.contains(
            "sextant_rule_conflicts{service=\"web.test.svc\",registry=\"consul/main\",kind=\"route\"} 1"
        ),
        "{metrics}"
    );
    // `sextant describe` names the rule in force and the one that lost.
    let described = describe(&sx, "web.test.svc").await;
    assert!(
        described.contains("Rules:      route default/web"),
        "{described}"
    );
    assert!(
        described.contains("route_rule: file/main is served, consul/main disagrees"),
        "{described}"
    );
}

/// `sextant describe service/HOST` against `sx`'s admin port.
async fn describe(sx: &Sextant, host: &str) -> String {
    let out = tokio::process::Command::new(BIN)
        .args(["describe", &format!("service/{host}"), "--admin-addr"])
        .arg(sx.admin.to_string())
        .output()
        .await
        .expect("run sextant describe");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
