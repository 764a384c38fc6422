//! Status written back to the API server: each route's parents
//! (`Accepted`, `ResolvedRefs`), and each Gateway of Sextant's class (see
//! `gateway_status`), only where it differs from what the object carries.

use super::*;
use sextant_core::progress::ProgressBoard;
use sextant_core::rules::GatewayProtocol;

use super::gateway_status;

/// Writes route and Gateway status.
pub(super) struct StatusWriter {
    pub(super) client: kube::Client,
    pub(super) controller: String,
    /// The class whose Gateways are Sextant's.
    pub(super) gateway_class: String,
    /// Write Ingresses' status (whether or not the Gateway API is served).
    pub(super) ingress_status: bool,
    pub(super) resources: BTreeMap<Kind, ApiResource>,
    pub(super) announced: Arc<Mutex<Announced>>,
    pub(super) enabled: bool,
}

impl StatusWriter {
    /// Patches the status of each route in `keys` whose status differs
    /// from what it should be.
    pub(super) async fn write(&self, state: &State, keys: &[ObjKey]) {
        if !self.enabled {
            return;
        }
        for key in keys.iter().filter(|k| k.0.is_route()) {
            let (Some(obj), Some(resource)) = (
                state.objects.get(key),
                self.resources.get(&Kind::Crd(key.0)),
            ) else {
                continue;
            };
            let converted = state.converted.get(key).cloned().unwrap_or_default();
            let Some(route_kind) = key.0.route_kind() else {
                continue;
            };
            let Some(patch) = status_patch(
                &self.controller,
                route_kind,
                obj,
                &converted,
                &state.services,
                &state.grants,
                &state.converted,
            ) else {
                continue;
            };
            self.patch(key, resource, &patch).await;
        }
    }

    /// Patches the status of each Gateway of Sextant's class whose status
    /// differs from what it should be, with where its routers stand.
    pub(super) async fn write_gateways(&self, state: &State, progress: &ProgressBoard) {
        if !self.enabled {
            return;
        }
        let Some(resource) = self.resources.get(&Kind::Crd(CrdKind::Gateway)) else {
            return;
        };
        let ours: Vec<(&ObjKey, &DynamicObject)> = state
            .objects
            .iter()
            .filter(|(k, o)| {
                k.0 == CrdKind::Gateway
                    && o.data["spec"]["gatewayClassName"].as_str() == Some(&self.gateway_class)
            })
            .collect();
        if ours.is_empty() {
            return;
        }
        let served: Vec<Rule> = ours
            .iter()
            .filter_map(|(k, _)| state.converted.get(*k)?.rule.clone())
            .collect();
        let routers = progress.gateways(&served);
        let routes: Vec<&Rule> = state
            .converted
            .iter()
            .filter(|(k, _)| k.0.is_route())
            .filter_map(|(_, c)| c.rule.as_ref())
            .collect();
        let credential_ok = |ns: &str, name: &str| state.credentials.readable(ns, name);
        let permitted = |gateway_ns: &str, ns: &str, name: &str| {
            state.grants.permits_secret(gateway_ns, ns, name)
        };
        for (key, obj) in ours {
            let converted = state.converted.get(key).cloned().unwrap_or_default();
            let at = converted
                .rule
                .as_ref()
                .and_then(|r| served.iter().position(|s| s == r));
            let facts = gateway_status::GatewayFacts {
                obj,
                rule: converted.rule.as_ref(),
                problem: converted.problem.as_deref(),
                failed: converted.failed,
                routes: &routes,
                credential_ok: &credential_ok,
                permitted: &permitted,
                routers: match (&routers, at) {
                    (Some(r), Some(i)) => r.get(i),
                    _ => None,
                },
            };
            if let Some(patch) = gateway_status::gateway_status_patch(&facts) {
                self.patch(key, resource, &patch).await;
            }
        }
    }

    /// Writes `Accepted` on the GatewayClass named `--gateway-class`, when
    /// its `controllerName` is Sextant's (`controller_name`); another
    /// controller's class of that name is left alone, and said once.
    pub(super) async fn write_gateway_class(&self, state: &State) {
        if !self.enabled {
            return;
        }
        let Some(resource) = self.resources.get(&Kind::Crd(CrdKind::GatewayClass)) else {
            return;
        };
        let key = (
            CrdKind::GatewayClass,
            String::new(),
            self.gateway_class.clone(),
        );
        let Some(obj) = state.objects.get(&key) else {
            return;
        };
        let controller = obj.data["spec"]["controllerName"].as_str().unwrap_or("");
        if controller != self.controller {
            let mut a = self.announced.lock().unwrap_or_else(|p| p.into_inner());
            if a.foreign_class.as_deref() != Some(controller) {
                a.foreign_class = Some(controller.to_owned());
                warn!(
                    class = %self.gateway_class,
                    controller,
                    ours = %self.controller,
                    "GatewayClass names another controller: its status is left alone (Sextant serves the Gateways of --gateway-class by name)"
                );
            }
            return;
        }
        let old: Vec<Value> = obj.data["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let accepted = condition(
            "Accepted",
            true,
            "Accepted",
            "Sextant serves the Gateways of this class to router proxies".into(),
            obj.metadata.generation,
            &old,
        );
        let mut conditions: Vec<Value> = old
            .iter()
            .filter(|c| c["type"] != "Accepted")
            .cloned()
            .collect();
        conditions.insert(0, accepted);
        if conditions == old {
            return;
        }
        let patch = json!({
            "metadata": {"resourceVersion": obj.metadata.resource_version},
            "status": {"conditions": conditions},
        });
        self.patch(&key, resource, &patch).await;
    }

    /// Writes each Ingress of Sextant's class its
    /// `status.loadBalancer.ingress`: the addresses of the ingress
    /// gateway's routers connected here (none connected: left alone, as
    /// another replica's routers may be serving it).
    pub(super) async fn write_ingresses(&self, state: &State, config: &K8sConfig) {
        if !self.ingress_status {
            return;
        }
        let (Some(resource), Some(gateway)) = (
            self.resources.get(&Kind::Ingress),
            state.ingresses.gateway(config),
        ) else {
            return;
        };
        let Some(routers) = config
            .progress
            .gateways(std::slice::from_ref(&gateway))
            .and_then(|r| r.into_iter().next())
            .filter(|r| r.routers > 0)
        else {
            return;
        };
        let desired: Vec<Value> = routers
            .addresses
            .iter()
            .map(|a| json!({ "ip": a }))
            .collect();
        for key in state.ingresses.keys() {
            let Some(obj) = state.ingress_objects.get(key) else {
                continue;
            };
            if obj.data["status"]["loadBalancer"]["ingress"] == json!(desired) {
                continue;
            }
            let patch = json!({
                "metadata": {"resourceVersion": obj.metadata.resource_version},
                "status": {"loadBalancer": {"ingress": desired}},
            });
            let what = format!("Ingress {}/{}", key.0, key.1);
            self.patch_at(Some(&key.0), &key.1, &what, resource, &patch)
                .await;
        }
    }

    /// Sends one status patch.
    async fn patch(&self, key: &ObjKey, resource: &ApiResource, patch: &Value) {
        let namespace = (!key.0.cluster_scoped()).then_some(key.1.as_str());
        self.patch_at(namespace, &key.2, &object_name(key), resource, patch)
            .await;
    }

    /// Sends one status patch to `name` (of `namespace`, none:
    /// cluster-scoped), named `what` in logs.
    async fn patch_at(
        &self,
        namespace: Option<&str>,
        name: &str,
        what: &str,
        resource: &ApiResource,
        patch: &Value,
    ) {
        let api: Api<DynamicObject> = match namespace {
            None => Api::all_with(self.client.clone(), resource),
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
        };
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {}
            // Changed meanwhile: its watch event brings it back here.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
            Err(kube::Error::Api(s)) if s.code == 403 => {
                let mut a = self.announced.lock().unwrap_or_else(|p| p.into_inner());
                if !a.forbidden_status {
                    a.forbidden_status = true;
                    warn!(
                        "cannot write status ({}): RBAC needs patch on \"{}/status\" in API group \"{}\" (see deploy/rbac.yaml)",
                        s.message, resource.plural, resource.group
                    );
                }
            }
            Err(e) => warn!(object = what, error = %e, "cannot write status"),
        }
    }
}

pub(super) fn condition(
    kind: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    old: &[Value],
) -> Value {
    let status = if ok { "True" } else { "False" };
    // The transition time moves only when the status does.
    let since = old
        .iter()
        .find(|c| c["type"] == kind && c["status"] == status)
        .and_then(|c| c.get("lastTransitionTime").cloned())
        .unwrap_or_else(|| {
            serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ))
            .unwrap_or(Value::Null)
        });
    let mut c = json!({"type": kind, "status": status, "reason": reason, "message": message,
                       "lastTransitionTime": since});
    if let Some(g) = generation {
        c["observedGeneration"] = json!(g);
    }
    c
}

fn is_core_service(group: Option<&str>, kind: Option<&str>, default_kind: &str) -> bool {
    kind.unwrap_or(default_kind) == "Service" && matches!(group, None | Some("" | "core"))
}

/// The merge patch that makes the route's status right, or `None` when it
/// already is.
pub(super) fn status_patch(
    controller: &str,
    route_kind: RouteKind,
    obj: &DynamicObject,
    converted: &Converted,
    services: &BTreeSet<Key>,
    grants: &gateway::Grants,
    converted_objects: &BTreeMap<ObjKey, Converted>,
) -> Option<Value> {
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let spec = obj.data.get("spec").cloned().unwrap_or(Value::Null);
    let current: Vec<Value> = obj.data["status"]["parents"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let (ours, others): (Vec<Value>, Vec<Value>) = current
        .into_iter()
        .partition(|p| p["controllerName"] == controller);
    let str_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);

    // ResolvedRefs: the same for every parent.
    let mut unresolved: Option<(&str, String)> = None;
    for (i, rule) in spec["rules"].as_array().into_iter().flatten().enumerate() {
        for (j, b) in rule["backendRefs"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let group = str_of(b, "group");
            let kind = str_of(b, "kind");
            let name = str_of(b, "name").unwrap_or_default();
            let bns = str_of(b, "namespace").unwrap_or_else(|| ns.clone());
            if !is_core_service(group.as_deref(), kind.as_deref(), "Service") {
                unresolved.get_or_insert((
                    "InvalidKind",
                    format!("rules[{i}].backendRefs[{j}]: only Service backends are served"),
                ));
            } else if !grants.permits(route_kind, &ns, &bns, &name) {
                unresolved.get_or_insert((
                    "RefNotPermitted",
                    format!(
                        "rules[{i}].backendRefs[{j}]: Service {bns}/{name} is in another namespace and no ReferenceGrant there permits it"
                    ),
                ));
            } else if !services.contains(&(bns.clone(), name.clone())) {
                unresolved.get_or_insert((
                    "BackendNotFound",
                    format!("rules[{i}].backendRefs[{j}]: Service {bns}/{name} does not exist"),
                ));
            }
        }
    }
    let generation = obj.metadata.generation;
    let mut desired = Vec::new();
    for p in spec["parentRefs"].as_array().into_iter().flatten() {
        let (group, kind) = (str_of(p, "group"), str_of(p, "kind"));
        let name = str_of(p, "name").unwrap_or_default();
        let pns = str_of(p, "namespace").unwrap_or_else(|| ns.clone());
        let is_gateway = kind.as_deref().is_none_or(|k| k == "Gateway")
            && group
                .as_deref()
                .is_none_or(|g| g == "gateway.networking.k8s.io");
        // A Gateway of Sextant's class (another class's is not ours to
        // speak for).
        let gateway = converted_objects
            .get(&(CrdKind::Gateway, pns.clone(), name.clone()))
            .and_then(|c| c.rule.as_ref())
            .and_then(|r| r.as_gateway());
        if is_gateway && gateway.is_none() {
            continue;
        }
        if !is_gateway && !is_core_service(group.as_deref(), kind.as_deref(), "Gateway") {
            continue;
        }
        let old: Vec<Value> = ours
            .iter()
            .find(|o| &o["parentRef"] == p)
            .and_then(|o| o["conditions"].as_array().cloned())
            .unwrap_or_default();
        // Why the parent refuses the route, if it does.
        let refusal: Option<(&str, String)> = if converted.failed {
            Some((
                "UnsupportedValue",
                converted.problem.clone().unwrap_or_default(),
            ))
        } else if let Some(gw) = gateway {
            // The listeners that take this kind of route from this namespace.
            let fits = |l: &sextant_core::rules::GatewayListener| match route_kind {
                RouteKind::Tls => l.protocol == GatewayProtocol::Tls,
                RouteKind::Tcp => l.protocol == GatewayProtocol::Tcp,
                RouteKind::Http | RouteKind::Grpc => {
                    matches!(l.protocol, GatewayProtocol::Http | GatewayProtocol::Https)
                }
            };
            // ... and that its `sectionName` and `port` name, if it says.
            let named = |l: &sextant_core::rules::GatewayListener| {
                p["sectionName"].as_str().is_none_or(|s| s == l.name)
                    && p["port"].as_u64().is_none_or(|n| n == u64::from(l.port))
            };
            let listeners = || {
                gw.listeners
                    .iter()
                    .filter(|l| l.allows(&pns, &ns) && fits(l) && named(l))
            };
            let names: Vec<&str> = match spec["hostnames"].as_array() {
                Some(h) if !h.is_empty() => h.iter().filter_map(Value::as_str).collect(),
                _ => vec!["*"],
            };
            if listeners().next().is_none() {
                Some((
                    "NotAllowedByListeners",
                    format!("no listener of Gateway {pns}/{name} allows routes of namespace {ns}"),
                ))
            } else if !listeners().any(|l| names.iter().any(|h| l.accepts(h).is_some())) {
                Some((
                    "NoMatchingListenerHostname",
                    format!("no listener of Gateway {pns}/{name} accepts the route's hostnames"),
                ))
            } else {
                None
            }
        } else if !services.contains(&(pns.clone(), name.clone())) {
            Some((
                "NoMatchingParent",
                format!("Service {pns}/{name} does not exist"),
            ))
        } else {
            None
        };
        let accepted = match refusal {
            Some((reason, message)) => {
                condition("Accepted", false, reason, message, generation, &old)
            }
            None => condition(
                "Accepted",
                true,
                "Accepted",
                converted.problem.clone().unwrap_or_default(),
                generation,
                &old,
            ),
        };
        let resolved = match &unresolved {
            Some((reason, message)) => condition(
                "ResolvedRefs",
                false,
                reason,
                message.clone(),
                generation,
                &old,
            ),
            None => condition(
                "ResolvedRefs",
                true,
                "ResolvedRefs",
                String::new(),
                generation,
                &old,
            ),
        };
        desired.push(json!({"parentRef": p, "controllerName": controller,
                            "conditions": [accepted, resolved]}));
    }
    if desired == ours {
        return None;
    }
    let mut parents = others;
    parents.extend(desired);
    Some(json!({
        "metadata": {"resourceVersion": obj.metadata.resource_version},
        "status": {"parents": parents},
    }))
}
