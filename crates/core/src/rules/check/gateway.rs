//! Gateways and the credentials their HTTPS listeners name: ports shared
//! only by hostname, TLS where the protocol has it, PEM that is PEM (the
//! key never in a message).

use std::collections::{BTreeMap, BTreeSet};

use super::Checker;
use crate::validate::dns_name_problem;

/// The most listeners one gateway declares.
pub const MAX_LISTENERS: usize = 64;

pub(super) fn gateway(c: &mut Checker<'_>, g: &crate::rules::GatewayRule) {
    use crate::rules::GatewayProtocol;
    if g.listeners.is_empty() {
        c.bad("listeners", "must declare at least one listener");
    }
    if !c.count("listeners", g.listeners.len(), MAX_LISTENERS) {
        return;
    }
    let mut names = BTreeSet::new();
    // What each port holds: its protocol and the hostnames of its
    // listeners (HTTP, HTTPS or TLS listeners share a port by hostname).
    let mut ports: BTreeMap<u32, (GatewayProtocol, BTreeSet<Option<&str>>)> = BTreeMap::new();
    for (i, l) in g.listeners.iter().enumerate() {
        let at = format!("listeners[{i}]");
        if let Some(p) = dns_name_problem(&l.name) {
            c.bad(format!("{at}.name"), format!("{:?} {p}", l.name));
        } else if l.name.contains('.') {
            c.bad(
                format!("{at}.name"),
                format!("{:?} is not a DNS label", l.name),
            );
        }
        if !names.insert(&l.name) {
            c.bad(format!("{at}.name"), "another listener has this name");
        }
        c.port(&format!("{at}.port"), l.port);
        match ports.get_mut(&l.port) {
            None => {
                ports.insert(
                    l.port,
                    (l.protocol, BTreeSet::from([l.hostname.as_deref()])),
                );
            }
            Some((p, hosts))
                if *p == l.protocol
                    && l.protocol != GatewayProtocol::Tcp =>
            {
                if !hosts.insert(l.hostname.as_deref()) {
                    c.bad(
                        format!("{at}.hostname"),
                        format!(
                            "another {} listener of this port has this hostname",
                            l.protocol
                        ),
                    );
                }
            }
            Some(_) => c.bad(
                format!("{at}.port"),
                "another listener has this port (listeners of one protocol, HTTP, HTTPS or TLS, share one by hostname; TCP shares none)",
            ),
        }
        match (l.protocol, &l.tls) {
            (GatewayProtocol::Http, None) => {}
            (GatewayProtocol::Http, Some(_)) => {
                c.bad(
                    format!("{at}.tls"),
                    "an HTTP listener has no TLS (use HTTPS)",
                );
            }
            (GatewayProtocol::Https, None) => {
                c.bad(
                    format!("{at}.tls"),
                    "an HTTPS listener needs certificateRefs",
                );
            }
            (GatewayProtocol::Https, Some(tls)) => {
                let field = format!("{at}.tls.certificateRefs");
                if tls.certificate_refs.is_empty() {
                    c.bad(field.clone(), "must name at least one credential");
                }
                if c.count(
                    &field,
                    tls.certificate_refs.len(),
                    crate::rules::gateway::MAX_CERTIFICATES,
                ) {
                    for (j, r) in tls.certificate_refs.iter().enumerate() {
                        let bad = r.split('/').count() > 2
                            || r.split('/').any(|l| dns_name_problem(l).is_some());
                        if bad {
                            c.bad(
                                format!("{field}[{j}]"),
                                format!("{r:?}: NAME or NAMESPACE/NAME"),
                            );
                        }
                    }
                }
            }
            (GatewayProtocol::Tls | GatewayProtocol::Tcp, Some(_)) => c.bad(
                format!("{at}.tls"),
                format!(
                    "a {} listener terminates no TLS (TLS passes it through; terminate with HTTPS)",
                    l.protocol
                ),
            ),
            (GatewayProtocol::Tls | GatewayProtocol::Tcp, None) => {}
        }
        if l.protocol == GatewayProtocol::Tcp && l.hostname.is_some() {
            c.bad(
                format!("{at}.hostname"),
                "a TCP listener has no hostname (connections carry none)",
            );
        }
        if let Some(h) = &l.hostname {
            if h == "*" {
                c.bad(
                    format!("{at}.hostname"),
                    "leave it out to accept every name",
                );
            } else {
                c.gateway_host(&format!("{at}.hostname"), h);
            }
        }
    }
}

/// The largest certificate chain or key a credential holds.
pub const MAX_PEM_BYTES: usize = 64 * 1024;

pub(super) fn credential(c: &mut Checker<'_>, cred: &crate::rules::gateway::Credential) {
    let chain = &cred.certificate_chain;
    if chain.len() > MAX_PEM_BYTES {
        c.bad(
            "certificateChain",
            format!("more than {MAX_PEM_BYTES} bytes"),
        );
    } else if !chain.contains("-----BEGIN CERTIFICATE-----") {
        c.bad("certificateChain", "is not a PEM certificate chain");
    }
    let key = cred.private_key.expose();
    if key.len() > MAX_PEM_BYTES {
        c.bad("privateKey", format!("more than {MAX_PEM_BYTES} bytes"));
    } else if !(key.contains("-----BEGIN") && key.contains("PRIVATE KEY-----")) {
        // Never the key itself in the message.
        c.bad("privateKey", "is not a PEM private key");
    }
    if c.count(
        "grantedTo",
        cred.granted_to.len(),
        crate::rules::gateway::MAX_GRANTED,
    ) {
        for (i, ns) in cred.granted_to.iter().enumerate() {
            if let Some(p) = dns_name_problem(ns) {
                c.bad(format!("grantedTo[{i}]"), p);
            }
        }
    }
}
