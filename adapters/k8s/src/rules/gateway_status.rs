//! A Gateway's status, as the Gateway API defines it, for a Gateway of
//! Sextant's class. Pure: the object, what it converted to, the routes and
//! credentials read, and where its routers stand in; a merge patch out.
//!
//! - `Accepted`: the Gateway is served (at least one listener); what is
//!   not served is in the message. False (`Invalid`, `ListenersNotValid`)
//!   when nothing can be.
//! - `Programmed`: True only once every router proxy of the Gateway
//!   connected to this replica has acknowledged the configuration that
//!   holds this version of it (see [`sextant_core::progress`]); False
//!   (`Pending`) before, saying how many routers hold it. A replica with no
//!   router of the Gateway leaves a `Programmed` of the same generation
//!   alone, so that replicas do not overwrite each other.
//! - `listeners`: per listener of the spec, `Accepted` (False,
//!   `UnsupportedProtocol`, for one not served), `ResolvedRefs` (False,
//!   `InvalidCertificateRef`, for an HTTPS listener whose Secret is missing
//!   or unreadable), `Programmed`, the route kinds it takes and the number
//!   of routes attached (allowed there and with a hostname it accepts).
//! - `addresses`: the routers' instance IPs.

use serde_json::{Value, json};
use sextant_core::Rule;
use sextant_core::progress::GatewayRouters;
use sextant_core::rules::gateway::{GatewayProtocol, binds, credential_ref};

use super::status::condition;

/// What a Gateway's status is made from.
pub(super) struct GatewayFacts<'a> {
    /// The Gateway object.
    pub obj: &'a kube::api::DynamicObject,
    /// Its gateway rule, when it is served.
    pub rule: Option<&'a Rule>,
    /// Why it is not (entirely) served, if anything.
    pub problem: Option<&'a str>,
    /// Its conversion failed.
    pub failed: bool,
    /// Every route rule read.
    pub routes: &'a [&'a Rule],
    /// Whether the credential `(namespace, name)` is there and readable.
    pub credential_ok: &'a (dyn Fn(&str, &str) -> bool + Sync),
    /// Whether Gateways of the first namespace may use Secret `(namespace,
    /// name)` (a ReferenceGrant, for another namespace's).
    pub permitted: &'a (dyn Fn(&str, &str, &str) -> bool + Sync),
    /// Where its routers stand; `None`: not known here.
    pub routers: Option<&'a GatewayRouters>,
}

/// Routes attached to listener `l` of gateway `gw_ns/gw_name`.
fn attached(
    facts: &GatewayFacts<'_>,
    l: &sextant_core::rules::GatewayListener,
    gw_ns: &str,
    gw_name: &str,
) -> usize {
    facts
        .routes
        .iter()
        .filter(|r| {
            let ns = r.key.namespace.as_str();
            // A route bound to gateways only names its hosts in the route
            // rule (it binds to no service).
            r.as_route().is_some_and(|route| {
                let fits = match l.protocol {
                    GatewayProtocol::Http | GatewayProtocol::Https => !route.http.is_empty(),
                    GatewayProtocol::Tls => !route.tls.is_empty(),
                    GatewayProtocol::Tcp => !route.tcp.is_empty(),
                };
                fits && route
                    .gateways
                    .iter()
                    .any(|g| binds(g, ns, gw_ns, gw_name, l))
                    && route.hosts.iter().any(|h| l.accepts(h.as_str()).is_some())
            }) && l.allows(gw_ns, ns)
        })
        .count()
}

/// The merge patch that makes the Gateway's status right, or `None` when
/// it already is.
pub(super) fn gateway_status_patch(facts: &GatewayFacts<'_>) -> Option<Value> {
    let obj = facts.obj;
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let name = obj.metadata.name.clone().unwrap_or_default();
    let generation = obj.metadata.generation;
    let status = &obj.data["status"];
    let old: Vec<Value> = status["conditions"].as_array().cloned().unwrap_or_default();
    let gateway = facts.rule.and_then(Rule::as_gateway);
    let message = facts.problem.unwrap_or_default().to_owned();

    let accepted = match gateway {
        Some(_) => condition(
            "Accepted",
            true,
            "Accepted",
            message.clone(),
            generation,
            &old,
        ),
        None if facts.failed => condition(
            "Accepted",
            false,
            "Invalid",
            message.clone(),
            generation,
            &old,
        ),
        None => condition(
            "Accepted",
            false,
            "ListenersNotValid",
            message.clone(),
            generation,
            &old,
        ),
    };
    let programmed = match (gateway, facts.routers) {
        (None, _) => Some(condition(
            "Programmed",
            false,
            "Invalid",
            "the Gateway is not served".into(),
            generation,
            &old,
        )),
        (Some(_), None) => Some(condition(
            "Programmed",
            false,
            "Pending",
            "whether its routers hold it is not known here".into(),
            generation,
            &old,
        )),
        (Some(_), Some(r)) if r.routers == 0 => {
            let same_generation = old.iter().any(|c| {
                c["type"] == "Programmed" && c["observedGeneration"].as_i64() == generation
            });
            if same_generation {
                // Another replica's routers may hold it: leave its word.
                None
            } else {
                Some(condition(
                    "Programmed",
                    false,
                    "Pending",
                    format!(
                        "no router proxy of this Gateway is connected (sextant bootstrap --mode router --gateway {ns}/{name})"
                    ),
                    generation,
                    &old,
                ))
            }
        }
        (Some(_), Some(r)) if r.programmed() => Some(condition(
            "Programmed",
            true,
            "Programmed",
            format!("held by {} router proxy(ies)", r.routers),
            generation,
            &old,
        )),
        (Some(_), Some(r)) => Some(condition(
            "Programmed",
            false,
            "Pending",
            if r.merged {
                format!(
                    "{} of {} router proxies hold this configuration",
                    r.holding, r.routers
                )
            } else {
                "this version is not yet in the configuration served".into()
            },
            generation,
            &old,
        )),
    };
    let programmed = match programmed {
        Some(p) => p,
        None => old
            .iter()
            .find(|c| c["type"] == "Programmed")
            .cloned()
            .unwrap_or(Value::Null),
    };
    let gateway_programmed = programmed["status"] == "True";

    let old_listeners: Vec<Value> = status["listeners"].as_array().cloned().unwrap_or_default();
    let mut listeners = Vec::new();
    for spec in obj.data["spec"]["listeners"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let lname = spec["name"].as_str().unwrap_or_default();
        let old: Vec<Value> = old_listeners
            .iter()
            .find(|l| l["name"] == lname)
            .and_then(|l| l["conditions"].as_array().cloned())
            .unwrap_or_default();
        let served = gateway.and_then(|g| g.listeners.iter().find(|l| l.name == lname));
        let kind = |k: &str| json!({"group": "gateway.networking.k8s.io", "kind": k});
        let Some(l) = served else {
            let why = format!(
                "listener {lname} is not served (protocol {}); see the Gateway's Accepted message",
                spec["protocol"].as_str().unwrap_or("?")
            );
            listeners.push(json!({
                "name": lname,
                "supportedKinds": [],
                "attachedRoutes": 0,
                "conditions": [
                    condition("Accepted", false, "UnsupportedProtocol", why.clone(), generation, &old),
                    condition("Programmed", false, "Invalid", why, generation, &old),
                    condition("ResolvedRefs", true, "ResolvedRefs", String::new(), generation, &old),
                ],
            }));
            continue;
        };
        let refs: Vec<(&str, &str)> = l
            .tls
            .iter()
            .flat_map(|t| t.certificate_refs.iter())
            .map(|r| credential_ref(r, &ns))
            .collect();
        let refused: Vec<String> = refs
            .iter()
            .filter(|(rns, rname)| !(facts.permitted)(&ns, rns, rname))
            .map(|(rns, rname)| format!("{rns}/{rname}"))
            .collect();
        let missing: Vec<String> = refs
            .iter()
            .filter(|(rns, rname)| !(facts.credential_ok)(rns, rname))
            .map(|(rns, rname)| format!("{rns}/{rname}"))
            .chain(refused.iter().cloned())
            .collect();
        let resolved = if missing.is_empty() {
            condition(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                String::new(),
                generation,
                &old,
            )
        } else if !refused.is_empty() {
            condition(
                "ResolvedRefs",
                false,
                "RefNotPermitted",
                format!(
                    "Secret {} is in another namespace and no ReferenceGrant there lets Gateways of {ns} use it: the listener is not served",
                    refused.join(", ")
                ),
                generation,
                &old,
            )
        } else {
            condition(
                "ResolvedRefs",
                false,
                "InvalidCertificateRef",
                format!(
                    "no readable kubernetes.io/tls Secret {}: the listener is not served",
                    missing.join(", ")
                ),
                generation,
                &old,
            )
        };
        let listener_programmed = gateway_programmed && missing.is_empty();
        let programmed = condition(
            "Programmed",
            listener_programmed,
            if listener_programmed {
                "Programmed"
            } else if missing.is_empty() {
                "Pending"
            } else {
                "Invalid"
            },
            String::new(),
            generation,
            &old,
        );
        let kinds = match l.protocol {
            GatewayProtocol::Http | GatewayProtocol::Https => {
                json!([kind("HTTPRoute"), kind("GRPCRoute")])
            }
            GatewayProtocol::Tls => json!([kind("TLSRoute")]),
            GatewayProtocol::Tcp => json!([kind("TCPRoute")]),
        };
        listeners.push(json!({
            "name": lname,
            "supportedKinds": kinds,
            "attachedRoutes": attached(facts, l, &ns, &name),
            "conditions": [
                condition("Accepted", true, "Accepted", String::new(), generation, &old),
                programmed,
                resolved,
            ],
        }));
    }
    let addresses: Vec<Value> = facts
        .routers
        .map(|r| r.addresses.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|a| json!({"type": "IPAddress", "value": a}))
        .collect();
    // A replica that knows no router leaves the addresses another wrote.
    let addresses = if addresses.is_empty() && facts.routers.is_none_or(|r| r.routers == 0) {
        status["addresses"].clone()
    } else {
        json!(addresses)
    };
    let mut conditions = vec![accepted];
    if !programmed.is_null() {
        conditions.push(programmed);
    }
    let desired = json!({
        "conditions": conditions,
        "listeners": listeners,
        "addresses": if addresses.is_null() { json!([]) } else { addresses },
    });
    let current = json!({
        "conditions": status["conditions"].as_array().cloned().unwrap_or_default(),
        "listeners": old_listeners,
        "addresses": status["addresses"].as_array().cloned().unwrap_or_default(),
    });
    if desired == current {
        return None;
    }
    Some(json!({
        "metadata": {"resourceVersion": obj.metadata.resource_version},
        "status": desired,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sextant_core::RouteRule;

    fn gateway_object(status: Value) -> kube::api::DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"namespace": "edge", "name": "public", "generation": 3, "resourceVersion": "7"},
            "spec": {"gatewayClassName": "sextant", "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}},
                {"name": "own", "port": 81, "protocol": "HTTP"},
                {"name": "https", "port": 443, "protocol": "HTTPS", "tls": {"certificateRefs": [{"name": "gone"}]}},
                {"name": "udp", "port": 9000, "protocol": "UDP"},
            ]},
            "status": status,
        }))
        .expect("a Gateway")
    }

    fn route(ns: &str, host: &str) -> Rule {
        Rule::route(
            ns,
            "r",
            RouteRule {
                gateways: vec!["edge/public".into()],
                hosts: vec![sextant_core::Hostname::new(host)],
                http: vec![sextant_core::rules::HttpRoute::default()],
                ..RouteRule::default()
            },
        )
    }

    fn condition_of(status: &Value, kind: &str) -> String {
        status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == kind)
            .map(|c| {
                format!(
                    "{}/{}",
                    c["status"].as_str().unwrap_or(""),
                    c["reason"].as_str().unwrap_or("")
                )
            })
            .unwrap_or_default()
    }

    fn listener<'a>(status: &'a Value, name: &str) -> &'a Value {
        status["listeners"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["name"] == name))
            .expect("listener")
    }

    /// Programmed follows the routers, listeners say what is attached and
    /// what is not served, and a status already right is not written again.
    #[test]
    fn programmed_only_once_every_router_holds_the_gateway() {
        let spec = gateway_object(Value::Null);
        let converted = crate::gateway::gateway("sextant", "edge", "public", &spec.data["spec"])
            .expect("converts");
        let rule = converted.rule.expect("served");
        let routes = [route("shop", "shop.example.com"), route("edge", "*")];
        let routes: Vec<&Rule> = routes.iter().collect();
        let no_secret = |_: &str, _: &str| false;
        let same_only = |g: &str, n: &str, _: &str| g == n;
        let status_with = |obj: &kube::api::DynamicObject, routers: Option<&GatewayRouters>| {
            gateway_status_patch(&GatewayFacts {
                obj,
                rule: Some(&rule),
                problem: Some("not served: spec.listeners[3]"),
                failed: false,
                routes: &routes,
                credential_ok: &no_secret,
                permitted: &same_only,
                routers,
            })
            .map(|p| p["status"].clone())
        };
        let unknown = status_with(&spec, None).expect("a status");
        assert_eq!(condition_of(&unknown, "Accepted"), "True/Accepted");
        assert_eq!(condition_of(&unknown, "Programmed"), "False/Pending");
        let waiting = GatewayRouters {
            merged: true,
            routers: 2,
            holding: 1,
            addresses: vec!["10.0.0.9".into()],
            problems: Vec::new(),
        };
        let pending = status_with(&spec, Some(&waiting)).expect("a status");
        assert_eq!(condition_of(&pending, "Programmed"), "False/Pending");
        assert!(
            pending.to_string().contains("1 of 2 router proxies"),
            "{pending}"
        );
        let held = GatewayRouters {
            holding: 2,
            ..waiting.clone()
        };
        let done = status_with(&spec, Some(&held)).expect("a status");
        assert_eq!(condition_of(&done, "Programmed"), "True/Programmed");
        assert_eq!(
            done["addresses"],
            json!([{"type": "IPAddress", "value": "10.0.0.9"}])
        );
        // All: both routes; Same: the gateway's own namespace's only.
        assert_eq!(listener(&done, "http")["attachedRoutes"], 2);
        assert_eq!(listener(&done, "own")["attachedRoutes"], 1);
        assert_eq!(
            condition_of(listener(&done, "http"), "Programmed"),
            "True/Programmed"
        );
        let https = listener(&done, "https");
        assert_eq!(
            condition_of(https, "ResolvedRefs"),
            "False/InvalidCertificateRef"
        );
        assert_eq!(condition_of(https, "Programmed"), "False/Invalid");
        assert_eq!(
            condition_of(listener(&done, "udp"), "Accepted"),
            "False/UnsupportedProtocol"
        );
        // Written: nothing to write again.
        let written = gateway_object(done.clone());
        assert_eq!(status_with(&written, Some(&held)), None);
        // A replica with no router of it leaves that word alone.
        let elsewhere = GatewayRouters::default();
        assert_eq!(status_with(&written, Some(&elsewhere)), None);
        // One that sees a router lagging says so.
        let lagging = status_with(&written, Some(&waiting)).expect("a status");
        assert_eq!(condition_of(&lagging, "Programmed"), "False/Pending");
    }
}
