//! Who a node says it is: the namespace it claims, from Istio's node
//! conventions, which Envoy tooling and `sextant bootstrap` both follow.
//!
//! - Node metadata `NAMESPACE` (a string), when present;
//! - else the node id of Istio's form `TYPE~IP~POD.NAMESPACE~DOMAIN`
//!   (`sidecar~10.1.0.7~reviews-v1-5b7.default~default.svc.cluster.local`):
//!   the namespace is the part of the third field after its first dot.
//!
//! A claim is only a claim: on its own it proves nothing. The server
//! compares it with what the connection proved (a certificate's SPIFFE id)
//! and refuses a stream whose claim and proof disagree.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::value::Kind;

/// The namespace a node claims, if it claims one.
pub fn claimed_namespace(node: &Node) -> Option<String> {
    let from_metadata = node
        .metadata
        .as_ref()
        .and_then(|m| m.fields.get("NAMESPACE"))
        .and_then(|v| match &v.kind {
            Some(Kind::StringValue(s)) if !s.is_empty() => Some(s.clone()),
            _ => None,
        });
    from_metadata.or_else(|| namespace_from_id(&node.id).map(str::to_owned))
}

/// The namespace in an Istio-form node id, if the id has that form.
pub fn namespace_from_id(id: &str) -> Option<&str> {
    let mut parts = id.split('~');
    let (_kind, _ip, pod, _domain) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let ns = pod.split_once('.')?.1;
    (!ns.is_empty() && !ns.contains('.')).then_some(ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::google::protobuf::{Struct, Value};

    #[test]
    fn the_claim_comes_from_metadata_then_the_istio_node_id() {
        let mut node = Node {
            id: "sidecar~10.1.0.7~reviews-v1-5b7.default~default.svc.cluster.local".into(),
            ..Default::default()
        };
        assert_eq!(claimed_namespace(&node).as_deref(), Some("default"));
        node.metadata = Some(Struct {
            fields: [(
                "NAMESPACE".to_owned(),
                Value {
                    kind: Some(Kind::StringValue("shop".into())),
                },
            )]
            .into(),
        });
        assert_eq!(claimed_namespace(&node).as_deref(), Some("shop"));
        for id in [
            "laptop",
            "sidecar~1.2.3.4~pod~x",
            "a~b~c.d.e~f",
            "a~b~c.~d",
            "a~b~c.d~e~f",
        ] {
            assert_eq!(namespace_from_id(id), None, "{id}");
        }
    }
}
