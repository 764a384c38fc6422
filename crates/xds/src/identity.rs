//! Who a node says it is, from Istio's node conventions, which Envoy
//! tooling and `sextant bootstrap` both follow. Sextant's node metadata:
//!
//! | key | value | meaning |
//! |---|---|---|
//! | `NAMESPACE` | string | the workload's namespace |
//! | `LABELS` | struct of strings | the workload's labels |
//! | `INSTANCE_IPS` | string, comma-separated | the workload's addresses |
//! | `INTERCEPTION_MODE` | `NONE` (explicit) or `REDIRECT` / `TPROXY` (capture) | how traffic reaches the proxy |
//! | `AUTO_REGISTER_GROUP` | string | the WorkloadGroup (of its namespace) to register the workload from (Istio's VM auto-registration) |
//! | `NETWORK` | string | the workload's network |
//! | `GATEWAY` | string `NAMESPACE/NAME` | the gateway a router proxy serves ([`sextant_core::rules::gateway`]) |
//! | `GATEWAY_BIND` | IP address | where a router binds its gateway's listeners (default `0.0.0.0`) |
//! | `GATEWAY_PORT_OFFSET` | number, 0-64511 | added to a router's declared ports below 1024 (default 0) |
//!
//! Without metadata, the node id of Istio's form
//! `TYPE~IP~POD.NAMESPACE~DOMAIN`
//! (`sidecar~10.1.0.7~reviews-v1-5b7.default~default.svc.cluster.local`)
//! gives the namespace (after the third field's first dot) and the IP. A
//! node with neither (a laptop bootstrap, a bare gRPC client) has no
//! identity and is served as before.
//!
//! A claim is only a claim: on its own it proves nothing. The server
//! compares the namespace with what the connection proved (a certificate's
//! or a token's identity) and refuses a stream whose claim and proof
//! disagree. Everything read is bounded ([`MAX_LABELS`], [`MAX_IPS`]).

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::value::Kind;

/// The most labels read from a node.
pub const MAX_LABELS: usize = 64;
/// The most instance IPs read from a node.
pub const MAX_IPS: usize = 16;
/// The longest label key or value read.
const MAX_LABEL_BYTES: usize = 253;

/// How traffic reaches the proxy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Interception {
    /// The application sends to the proxy's listeners (laptops, gRPC).
    #[default]
    Explicit,
    /// Traffic is captured (iptables REDIRECT or TPROXY).
    Capture,
}

/// What a node says about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeIdentity {
    /// The namespace it claims.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its workload's labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Its workload's addresses.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpAddr>,
    /// How traffic reaches it.
    pub mode: Interception,
    /// It holds a workload certificate from its agent (metadata
    /// `WORKLOAD_CERTS`: `sds` for Envoy, `files` for proxyless gRPC's
    /// certificate provider): it takes part in mutual TLS.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub workload_certs: bool,
    /// The WorkloadGroup to register the workload from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The workload's network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The gateway it serves as a router proxy: (namespace, name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<(String, String)>,
    /// Where a router binds its gateway's listeners.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_bind: Option<IpAddr>,
    /// Added to a router's declared ports below 1024.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway_port_offset: Option<u32>,
}

/// The node metadata key that says a proxy's agent serves it a workload
/// certificate over SDS, and its value.
pub const WORKLOAD_CERTS: (&str, &str) = ("WORKLOAD_CERTS", "sds");
/// Its value for a proxyless gRPC client whose bootstrap names the agent's
/// certificate files as the `default` certificate provider instance.
pub const WORKLOAD_CERT_FILES: &str = "files";

fn string_field(node: &Node, key: &str) -> Option<String> {
    node.metadata
        .as_ref()
        .and_then(|m| m.fields.get(key))
        .and_then(|v| match &v.kind {
            Some(Kind::StringValue(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        })
}

impl NodeIdentity {
    /// What `node` says, from its metadata, else its id.
    pub fn from_node(node: &Node) -> NodeIdentity {
        let namespace = string_field(node, "NAMESPACE")
            .or_else(|| namespace_from_id(&node.id).map(str::to_owned));
        let mut labels = BTreeMap::new();
        if let Some(Kind::StructValue(s)) = node
            .metadata
            .as_ref()
            .and_then(|m| m.fields.get("LABELS"))
            .and_then(|v| v.kind.as_ref())
        {
            for (k, v) in s.fields.iter().take(MAX_LABELS) {
                if let Some(Kind::StringValue(v)) = &v.kind
                    && k.len() <= MAX_LABEL_BYTES
                    && v.len() <= MAX_LABEL_BYTES
                {
                    labels.insert(k.clone(), v.clone());
                }
            }
        }
        let mut ips: Vec<IpAddr> = string_field(node, "INSTANCE_IPS")
            .map(|s| {
                s.split(',')
                    .take(MAX_IPS)
                    .filter_map(|ip| ip.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        if ips.is_empty()
            && let Some(ip) = ip_from_id(&node.id)
        {
            ips.push(ip);
        }
        let mode = match string_field(node, "INTERCEPTION_MODE").as_deref() {
            Some("REDIRECT" | "TPROXY") => Interception::Capture,
            _ => Interception::Explicit,
        };
        let bounded = |key| string_field(node, key).filter(|v| v.len() <= MAX_LABEL_BYTES);
        NodeIdentity {
            namespace,
            labels,
            ips,
            mode,
            group: bounded("AUTO_REGISTER_GROUP"),
            network: bounded("NETWORK"),
            gateway: bounded("GATEWAY").and_then(|g| {
                let (ns, name) = g.split_once('/')?;
                (!ns.is_empty() && !name.is_empty() && !name.contains('/'))
                    .then(|| (ns.to_owned(), name.to_owned()))
            }),
            gateway_bind: string_field(node, "GATEWAY_BIND").and_then(|a| a.parse().ok()),
            gateway_port_offset: string_field(node, "GATEWAY_PORT_OFFSET")
                .and_then(|o| o.parse::<u32>().ok())
                .filter(|o| *o <= 65535 - 1023),
            workload_certs: matches!(
                string_field(node, WORKLOAD_CERTS.0).as_deref(),
                Some(v) if v == WORKLOAD_CERTS.1 || v == WORKLOAD_CERT_FILES
            ),
        }
    }

    /// True when the node said nothing about itself.
    pub fn is_empty(&self) -> bool {
        self.namespace.is_none() && self.labels.is_empty() && self.ips.is_empty()
    }
}

/// The namespace a node claims, if it claims one.
pub fn claimed_namespace(node: &Node) -> Option<String> {
    NodeIdentity::from_node(node).namespace
}

fn istio_id(id: &str) -> Option<[&str; 4]> {
    let mut parts = id.split('~');
    let fields = [parts.next()?, parts.next()?, parts.next()?, parts.next()?];
    parts.next().is_none().then_some(fields)
}

/// The namespace in an Istio-form node id, if the id has that form.
pub fn namespace_from_id(id: &str) -> Option<&str> {
    let [_, _, pod, _] = istio_id(id)?;
    let ns = pod.split_once('.')?.1;
    (!ns.is_empty() && !ns.contains('.')).then_some(ns)
}

/// The IP in an Istio-form node id, if the id has that form.
pub fn ip_from_id(id: &str) -> Option<IpAddr> {
    let [_, ip, pod, _] = istio_id(id)?;
    pod.contains('.').then(|| ip.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{Struct, Value};

    fn string(s: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(s.into())),
        }
    }

    #[test]
    fn the_claim_comes_from_metadata_then_the_istio_node_id() {
        let mut node = Node {
            id: "sidecar~10.1.0.7~reviews-v1-5b7.default~default.svc.cluster.local".into(),
            ..Default::default()
        };
        let id = NodeIdentity::from_node(&node);
        assert_eq!(id.namespace.as_deref(), Some("default"));
        assert_eq!(id.ips, ["10.1.0.7".parse::<IpAddr>().expect("ip")]);
        assert_eq!(id.mode, Interception::Explicit);
        let labels = Struct {
            fields: [
                ("version".to_owned(), string("v1")),
                (
                    "n".to_owned(),
                    Value {
                        kind: Some(Kind::NumberValue(1.0)),
                    },
                ),
            ]
            .into(),
        };
        node.metadata = Some(Struct {
            fields: [
                ("NAMESPACE".to_owned(), string("shop")),
                (
                    "LABELS".to_owned(),
                    Value {
                        kind: Some(Kind::StructValue(labels)),
                    },
                ),
                ("INSTANCE_IPS".to_owned(), string("10.2.0.1, fd00::1,bogus")),
                ("INTERCEPTION_MODE".to_owned(), string("REDIRECT")),
            ]
            .into(),
        });
        let id = NodeIdentity::from_node(&node);
        assert_eq!(id.namespace.as_deref(), Some("shop"));
        assert_eq!(id.labels.len(), 1, "only string labels: {:?}", id.labels);
        assert_eq!(id.labels["version"], "v1");
        assert_eq!(id.ips.len(), 2);
        assert_eq!(id.mode, Interception::Capture);
        for bad in [
            "laptop",
            "sidecar~1.2.3.4~pod~x",
            "a~b~c.d.e~f",
            "a~b~c.~d",
            "a~b~c.d~e~f",
        ] {
            assert_eq!(namespace_from_id(bad), None, "{bad}");
        }
        assert!(
            NodeIdentity::from_node(&Node {
                id: "laptop".into(),
                ..Default::default()
            })
            .is_empty()
        );
    }
}
