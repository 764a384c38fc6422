//! Builders for real-shaped objects, as k8s-openapi types.

use k8s_openapi::api::core::v1::{
    Node, ObjectReference, Pod, PodSpec, PodStatus, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

fn meta(namespace: Option<&str>, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        labels: (!labels.is_empty()).then(|| {
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        }),
        ..Default::default()
    }
}

/// A ClusterIP Service with `(name, port, target port)` TCP ports.
pub fn service(namespace: &str, name: &str, ports: &[(&str, i32, i32)]) -> Service {
    Service {
        metadata: meta(Some(namespace), name, &[("app", name)]),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            cluster_ip: Some("10.96.0.10".into()),
            cluster_ips: Some(vec!["10.96.0.10".into()]),
            selector: Some([("app".to_owned(), name.to_owned())].into()),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p, t)| ServicePort {
                        name: (!n.is_empty()).then(|| (*n).to_owned()),
                        port: *p,
                        protocol: Some("TCP".into()),
                        target_port: Some(
                            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(*t),
                        ),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    }
}

/// A ready endpoint on `node` in `zone`.
pub fn endpoint(ip: &str, node: Option<&str>, zone: Option<&str>) -> Endpoint {
    Endpoint {
        addresses: vec![ip.into()],
        conditions: Some(EndpointConditions {
            ready: Some(true),
            serving: Some(true),
            terminating: Some(false),
        }),
        node_name: node.map(Into::into),
        zone: zone.map(Into::into),
        target_ref: None,
        ..Default::default()
    }
}

/// `endpoint` with conditions set: what the EndpointSlice controller
/// writes for a pod that is shutting down (`ready` false, `terminating`
/// true) or failing its readiness probe (`ready` and `serving` false).
pub fn with_conditions(mut e: Endpoint, ready: bool, serving: bool, terminating: bool) -> Endpoint {
    e.conditions = Some(EndpointConditions {
        ready: Some(ready),
        serving: Some(serving),
        terminating: Some(terminating),
    });
    e
}

/// An IPv4 EndpointSlice of `service` with `(port name, number)` ports.
pub fn slice(
    namespace: &str,
    name: &str,
    service: &str,
    ports: &[(&str, i32)],
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    EndpointSlice {
        metadata: meta(
            Some(namespace),
            name,
            &[
                ("kubernetes.io/service-name", service),
                (
                    "endpointslice.kubernetes.io/managed-by",
                    "endpointslice-controller.k8s.io",
                ),
            ],
        ),
        address_type: "IPv4".into(),
        endpoints,
        ports: Some(
            ports
                .iter()
                .map(|(n, p)| EndpointPort {
                    name: Some((*n).to_owned()),
                    port: Some(*p),
                    protocol: Some("TCP".into()),
                    app_protocol: None,
                })
                .collect(),
        ),
    }
}

/// A Node with the well-known region and zone labels.
pub fn node(name: &str, region: &str, zone: &str) -> Node {
    Node {
        metadata: meta(
            None,
            name,
            &[
                ("topology.kubernetes.io/region", region),
                ("topology.kubernetes.io/zone", zone),
                ("kubernetes.io/hostname", name),
            ],
        ),
        ..Default::default()
    }
}

/// A running Pod on `node` with `labels` and IP `ip` (one container,
/// `app`): what the kubelet reports once it is up.
pub fn pod(namespace: &str, name: &str, ip: &str, node: &str, labels: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: meta(Some(namespace), name, labels),
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            containers: vec![k8s_openapi::api::core::v1::Container {
                name: "app".into(),
                image: Some("registry.example/app:1".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![k8s_openapi::api::core::v1::PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            pod_ip: Some(ip.into()),
            pod_ips: Some(vec![k8s_openapi::api::core::v1::PodIP { ip: ip.into() }]),
            ..Default::default()
        }),
    }
}

/// `endpoint` backed by Pod `namespace/pod` (its `targetRef`), as the
/// EndpointSlice controller writes it.
pub fn for_pod(mut e: Endpoint, namespace: &str, pod: &str) -> Endpoint {
    e.target_ref = Some(ObjectReference {
        kind: Some("Pod".into()),
        namespace: Some(namespace.into()),
        name: Some(pod.into()),
        ..Default::default()
    });
    e
}
