//! A real Envoy as the router of a Gateway API Gateway, with kubectl on the
//! API-server double: examples/kubernetes/public-gateway.yaml (its ports
//! moved to free ones) and storefront-httproute.yaml. Host and path
//! routing through the router; the route's status per Gateway parent
//! (accepted by public, refused by internal's allowedRoutes); a Gateway
//! of another class is not served.
//!
//! A module of the `k8s` test.

use super::*;

/// An example file with `from` replaced by `to` (a fixed port by a free one).
pub(super) fn example_with(dir: &std::path::Path, name: &str, swaps: &[(&str, String)]) -> String {
    let mut text = std::fs::read_to_string(example(name)).expect("example");
    for (from, to) in swaps {
        assert!(text.contains(from), "{name} has no {from:?}");
        text = text.replace(from, to);
    }
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path.to_str().expect("path").to_owned()
}

/// The API-server double with `crd` installed, Services web (8080) and
/// api (9090) of namespace shop with a backend each, and Sextant reading
/// it.
pub(super) struct Shop {
    pub(super) double: KubeDouble,
    pub(super) web: HttpBackend,
    pub(super) api: HttpBackend,
    pub(super) dir: tempfile::TempDir,
    pub(super) sx: Sextant,
}

pub(super) async fn shop(crd: Crd) -> Shop {
    let double = KubeDouble::start().await;
    double.install(crd);
    let web = HttpBackend::start("web").await;
    let api = HttpBackend::start("api").await;
    service_on(&double, "shop", "web", ("http", 8080), &web);
    service_on(&double, "shop", "api", ("http", 9090), &api);
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = double.kubeconfig(dir.path(), "double");
    let sx = start(dir.path(), &kubeconfig, &[]).await;
    Shop {
        double,
        web,
        api,
        dir,
        sx,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_api_gateway_is_served_by_a_router_envoy() {
    let Shop {
        double,
        web: _web,
        api: _api,
        dir,
        sx,
    } = shop(Crd::GatewayApi).await;
    let (public, internal) = (
        sextant_testkit::peers::free_port(),
        sextant_testkit::peers::free_port(),
    );
    let envoy = router_envoy(
        sx.xds,
        "router~127.0.0.1~public-1.edge~edge.svc.cluster.local",
        "edge/public",
        &[],
    )
    .await;

    let k = Kubectl::new(&double);
    let gateways = example_with(
        dir.path(),
        "public-gateway.yaml",
        &[
            ("port: 8080", format!("port: {public}")),
            ("port: 8081", format!("port: {internal}")),
        ],
    );
    for file in [gateways, example("storefront-httproute.yaml")] {
        k.apply(&file).await;
    }
    let at = std::net::SocketAddr::from(([127, 0, 0, 1], public));
    let took = settles(at, "shop.example.com", "/api/cart", (200, "api")).await;
    eprintln!("the HTTPRoute served at the gateway {took:?} after kubectl apply");
    settles(at, "shop.example.com", "/", (200, "web")).await;
    settles(
        at,
        "other.example.com",
        "/",
        (404, "no route for this host at gateway edge/public"),
    )
    .await;

    // Status per Gateway parent: public accepts, internal refuses shop.
    let mut seen = String::new();
    for _ in 0..100 {
        let (ok, out, _) = k
            .run(&["get", "httproute", "storefront", "-n", "shop", "-o", "json"])
            .await;
        assert!(ok, "{out}");
        let route: serde_json::Value = serde_json::from_str(&out).expect("json");
        let accepted = |gateway: &str| {
            route["status"]["parents"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|p| p["parentRef"]["name"] == gateway)
                .and_then(|p| p["conditions"].as_array().cloned())
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Accepted")
                .map(|c| format!("{}/{}", c["status"], c["reason"]))
                .unwrap_or_default()
        };
        seen = format!("{} {}", accepted("public"), accepted("internal"));
        if seen == "\"True\"/\"Accepted\" \"False\"/\"NotAllowedByListeners\"" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        seen,
        "\"True\"/\"Accepted\" \"False\"/\"NotAllowedByListeners\"",
        "{}",
        sx.log()
    );

    // The GatewayClass of Sextant's controller is accepted.
    let mut class = String::new();
    for _ in 0..100 {
        let (ok, out, _) = k
            .run(&["get", "gatewayclass", "sextant", "-o", "json"])
            .await;
        assert!(ok, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        class = format!(
            "{}/{}",
            v["status"]["conditions"][0]["type"], v["status"]["conditions"][0]["status"]
        );
        if class == "\"Accepted\"/\"True\"" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(class, "\"Accepted\"/\"True\"", "{}", sx.log());

    // Another class's Gateway is not Sextant's: moved to another class,
    // its router has nothing left to listen on.
    let (ok, out, err) = k
        .run(&[
            "patch",
            "gateway",
            "public",
            "-n",
            "edge",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"gatewayClassName":"other"}}"#,
        ])
        .await;
    assert!(ok, "{out}{err}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while sextant_testkit::peers::http_get(at, "shop.example.com", "/")
        .await
        .is_ok()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener is still there"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        envoy.stat_sum("update_rejected").await,
        0,
        "{}",
        envoy.log()
    );
}

/// The Gateway's status: its `Programmed` condition as `Type/Reason:
/// message`, and the `attachedRoutes` of its first listener.
/// (Read from the double's store: polling with kubectl costs a process a
/// poll, and kubectl's reading of status is shown elsewhere.)
pub(super) async fn gateway_status(
    double: &KubeDouble,
    name: &str,
) -> (String, String, serde_json::Value) {
    let gw = double
        .get(sextant_testkit::k8s::Kind::Gateway, "edge", name)
        .unwrap_or_default();
    let condition = |kind: &str| {
        gw["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == kind)
            .map(|c| {
                format!(
                    "{}/{}: {}",
                    c["status"].as_str().unwrap_or(""),
                    c["reason"].as_str().unwrap_or(""),
                    c["message"].as_str().unwrap_or("")
                )
            })
            .unwrap_or_default()
    };
    (
        condition("Accepted"),
        condition("Programmed"),
        gw["status"].clone(),
    )
}

/// Polls the Gateway's status until `Programmed` starts with `want` (10 s).
async fn programmed(double: &KubeDouble, name: &str, want: &str) -> serde_json::Value {
    let started = tokio::time::Instant::now();
    loop {
        let (_, programmed, status) = gateway_status(double, name).await;
        if programmed.starts_with(want) {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "Gateway {name}: Programmed is {programmed:?}, not {want:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A Gateway is Programmed only once every router of it has acknowledged
/// its configuration: before any router connects it is Pending; a router
/// held back (a raw ADS client that never ACKs) keeps it Pending while a
/// real Envoy already serves it; once the laggard is gone it is
/// Programmed, with the routers' address and the route attached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_is_programmed_only_once_its_routers_hold_it() {
    use sextant_testkit::ads::{SotwClient, node_with};
    let Shop {
        double,
        web: _web,
        api: _api,
        dir,
        sx,
    } = shop(Crd::GatewayApi).await;
    let (public, internal) = (
        sextant_testkit::peers::free_port(),
        sextant_testkit::peers::free_port(),
    );
    let k = Kubectl::new(&double);
    let gateways = example_with(
        dir.path(),
        "public-gateway.yaml",
        &[
            ("port: 8080", format!("port: {public}")),
            ("port: 8081", format!("port: {internal}")),
        ],
    );
    for file in [gateways, example("storefront-httproute.yaml")] {
        k.apply(&file).await;
    }

    // Translated, accepted, the route attached, and no router: not
    // programmed.
    programmed(&double, "public", "False/Pending: no router proxy").await;
    let started = tokio::time::Instant::now();
    loop {
        let (accepted, _, status) = gateway_status(&double, "public").await;
        if accepted == "True/Accepted: " && status["listeners"][0]["attachedRoutes"] == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{accepted} {status}\n{}",
            sx.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A router that never acknowledges holds it back.
    let held_id = "router~10.9.9.9~held-1.edge~edge.svc.cluster.local";
    let mut held = SotwClient::connect(sx.xds, held_id)
        .await
        .with_node(node_with(
            held_id,
            &[("GATEWAY", "edge/public"), ("INSTANCE_IPS", "10.9.9.9")],
        ));
    held.subscribe("type.googleapis.com/envoy.config.listener.v3.Listener", &[])
        .await;
    let listeners = held.recv().await;
    assert!(
        !listeners.resources.is_empty(),
        "no listener for the router"
    );
    programmed(&double, "public", "False/Pending: 0 of 1 router").await;

    // A real Envoy serves it, acknowledged; the laggard still holds it back.
    let envoy = router_envoy(
        sx.xds,
        "router~127.0.0.1~public-1.edge~edge.svc.cluster.local",
        "edge/public",
        &[],
    )
    .await;
    let at = std::net::SocketAddr::from(([127, 0, 0, 1], public));
    settles(at, "shop.example.com", "/", (200, "web")).await;
    programmed(&double, "public", "False/Pending: 1 of 2 router").await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, now, _) = gateway_status(&double, "public").await;
        assert!(now.starts_with("False/Pending"), "{now}");
    }

    // The laggard gone: Programmed, with the router's address.
    drop(held);
    let gone = tokio::time::Instant::now();
    let status = programmed(&double, "public", "True/Programmed").await;
    eprintln!(
        "Programmed {:?} after the held-back router left",
        gone.elapsed()
    );
    assert_eq!(
        status["addresses"],
        serde_json::json!([{"type": "IPAddress", "value": "127.0.0.1"}]),
        "{status}"
    );
    assert_eq!(
        status["listeners"][0]["conditions"][1]["status"], "True",
        "{status}"
    );
    // internal has no router at all.
    programmed(&double, "internal", "False/Pending: no router proxy").await;
    assert_eq!(
        envoy.stat_sum("update_rejected").await,
        0,
        "{}",
        envoy.log()
    );
}

/// The parent status of route `ns/name` at Gateway store/store:
/// `Accepted` and `ResolvedRefs` as `Status/Reason`.
async fn route_conditions(double: &KubeDouble, ns: &str, name: &str) -> String {
    let route = double
        .get(sextant_testkit::k8s::Kind::HttpRoute, ns, name)
        .unwrap_or_default();
    let parent = route["status"]["parents"][0]["conditions"].clone();
    ["Accepted", "ResolvedRefs"]
        .iter()
        .map(|kind| {
            parent
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == *kind)
                .map(|c| {
                    format!(
                        "{}/{}",
                        c["status"].as_str().unwrap_or(""),
                        c["reason"].as_str().unwrap_or("")
                    )
                })
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A team's own Gateway in its namespace (examples/kubernetes/
/// store-gateway.yaml): two HTTP listeners share a port by hostname, each
/// name to the most specific; allowedRoutes Same keeps another
/// namespace's route off the team's name (its status says why), All lets
/// it onto the api name; a route to a missing Service is reported and the
/// others keep working; a backend in another namespace answers 500 until
/// that namespace grants it (store-cart-grant.yaml), then 200; the missing
/// Service created, its route serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teams_gateway_binds_routes_by_namespace_hostname_and_grant() {
    let double = KubeDouble::start().await;
    double.install(Crd::GatewayApi);
    let web = HttpBackend::start("web").await;
    let api = HttpBackend::start("api").await;
    let cart = HttpBackend::start("cart").await;
    service_on(&double, "store", "web", ("http", 8080), &web);
    service_on(&double, "shop", "api", ("http", 9090), &api);
    service_on(&double, "shop", "cart", ("http", 8080), &cart);
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = double.kubeconfig(dir.path(), "double");
    let sx = start(dir.path(), &kubeconfig, &[]).await;
    let port = sextant_testkit::peers::free_port();
    let envoy = router_envoy(
        sx.xds,
        "router~127.0.0.1~store-1.store~store.svc.cluster.local",
        "store/store",
        &[],
    )
    .await;
    let k = Kubectl::new(&double);
    let file = example_with(
        dir.path(),
        "store-gateway.yaml",
        &[(
            "port: 8080\n      protocol",
            format!("port: {port}\n      protocol"),
        )],
    );
    k.apply(&file).await;
    let at = std::net::SocketAddr::from(([127, 0, 0, 1], port));

    settles(at, "www.store.example", "/", (200, "web")).await;
    settles(at, "api.store.example", "/", (200, "api")).await;
    // The missing Service's share: no backend, the others unaffected.
    settles(at, "old.store.example", "/", (500, "")).await;
    // No grant yet: shop's cart is refused to store's route.
    settles(at, "www.store.example", "/cart", (500, "")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let want = [
        ("store", "www", "True/Accepted False/RefNotPermitted"),
        ("store", "old", "True/Accepted False/BackendNotFound"),
        ("shop", "api", "True/Accepted True/ResolvedRefs"),
        (
            "shop",
            "takeover",
            "False/NoMatchingListenerHostname True/ResolvedRefs",
        ),
    ];
    for (ns, name, conditions) in want {
        loop {
            let now = route_conditions(&double, ns, name).await;
            if now == conditions {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "HTTPRoute {ns}/{name}: {now}, not {conditions}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // shop grants store its cart: served, the status resolved.
    k.apply(&example("store-cart-grant.yaml")).await;
    settles(at, "www.store.example", "/cart", (200, "cart")).await;
    settles(at, "www.store.example", "/", (200, "web")).await;
    loop {
        let now = route_conditions(&double, "store", "www").await;
        if now == "True/Accepted True/ResolvedRefs" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The missing Service created: the route that named it serves it, and
    // its status resolves.
    let retired = HttpBackend::start("retired").await;
    service_on(&double, "store", "retired", ("http", 8080), &retired);
    let took = settles(at, "old.store.example", "/", (200, "retired")).await;
    eprintln!("a Service created behind a gateway route served after {took:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = route_conditions(&double, "store", "old").await;
        if now == "True/Accepted True/ResolvedRefs" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{now}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        envoy.stat_sum("update_rejected").await,
        0,
        "{}",
        envoy.log()
    );
}

/// Istio's Gateway and a VirtualService bound to it by `gateways:`
/// (examples/kubernetes/istio-gateway.yaml, its port moved to a free one),
/// applied with kubectl: the router serves the VirtualService's routes at
/// the Gateway's host, and a name no VirtualService serves is a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_istio_gateway_serves_the_virtual_services_bound_to_it() {
    let Shop {
        double,
        web: _web,
        api: _api,
        dir,
        sx,
    } = shop(Crd::Istio).await;
    let port = sextant_testkit::peers::free_port();
    let envoy = router_envoy(
        sx.xds,
        "router~127.0.0.1~bookinfo-1.edge~edge.svc.cluster.local",
        "edge/bookinfo-gateway",
        &[],
    )
    .await;
    let k = Kubectl::new(&double);
    let file = example_with(
        dir.path(),
        "istio-gateway.yaml",
        &[(
            "number: 8080, name: http",
            format!("number: {port}, name: http"),
        )],
    );
    k.apply(&file).await;
    let at = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let took = settles(at, "bookinfo.example.com", "/api/books", (200, "api")).await;
    eprintln!("the VirtualService served at the Istio Gateway {took:?} after kubectl apply");
    settles(at, "bookinfo.example.com", "/", (200, "web")).await;
    settles(
        at,
        "other.example.com",
        "/",
        (
            404,
            "no route for this host at gateway edge/bookinfo-gateway",
        ),
    )
    .await;
    // The router says nothing is amiss.
    let syncz = sx.json("/debug/syncz").await;
    let router = &syncz["connections"][0]["router"];
    assert_eq!(router["gateway"], "edge/bookinfo-gateway", "{syncz}");
    assert!(router.get("problems").is_none(), "{router}");
    assert_eq!(
        envoy.stat_sum("update_rejected").await,
        0,
        "{}",
        envoy.log()
    );
}
