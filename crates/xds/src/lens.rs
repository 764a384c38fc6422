//! How one proxy sees a snapshot: its [`Lens`].
//!
//! A proxy does not see the snapshot as translation made it. Its scope
//! ([`crate::scope`]) hides the hosts it may not see, and a capture-mode
//! proxy gets its own listener layout ([`crate::capture`]) in place of the
//! explicit listeners and routes. The lens answers "what is resource
//! `kind`/`name` for this proxy" and "which names does a wildcard
//! subscription cover"; the per-connection protocol asks it and nothing else.
//!
//! Lenses are cheap to share: alike proxies hold the same `Arc<Scope>` and
//! `Arc<CaptureSet>` ([`Lenses`] caches both per generation), and a lens's
//! digest is part of the key under which plans are shared. A connection
//! looks its lens up again only when what it depends on moved
//! ([`ProxyLens::refresh`]): the scope with the snapshot's topology
//! generation, a capture layout with any snapshot (a capture proxy's own
//! ports follow endpoints). An endpoint flip costs a plain proxy nothing here.

use std::sync::Arc;

use crate::capture::{CaptureCache, CaptureSet};
use crate::identity::{Interception, NodeIdentity};
use crate::resource::{Resource, ResourceType};
use crate::router::{RouterCache, RouterSet};
use crate::scope::{Scope, ScopeCache, ScopeConfig};
use crate::snapshot::{Form, Snapshot};
use crate::translate::Client;
use crate::translate::capture::CaptureOptions;

/// What one proxy sees of a snapshot: the hosts of its scope (`None`:
/// every host) and, for a capture-mode proxy, its own layout in place of
/// the explicit listeners and routes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Lens {
    scope: Option<Arc<Scope>>,
    capture: Option<Arc<CaptureSet>>,
    /// A router proxy: its gateway's listeners and routes, in place of
    /// the explicit ones.
    router: Option<Arc<RouterSet>>,
    /// The proxy holds a workload certificate (it receives the clusters a
    /// certificate changes: [`Form::GrpcMesh`] for gRPC).
    certificate: bool,
}

impl PartialEq for Lens {
    fn eq(&self, other: &Lens) -> bool {
        fn same<T: PartialEq>(a: Option<&Arc<T>>, b: Option<&Arc<T>>) -> bool {
            match (a, b) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                _ => false,
            }
        }
        same(self.scope.as_ref(), other.scope.as_ref())
            && same(self.capture.as_ref(), other.capture.as_ref())
            && same(self.router.as_ref(), other.router.as_ref())
            && self.certificate == other.certificate
    }
}

impl Lens {
    /// The proxy's scope, when scoped.
    pub(crate) fn scope(&self) -> Option<&Arc<Scope>> {
        self.scope.as_ref()
    }

    /// The proxy's own layout, in capture mode.
    pub(crate) fn capture(&self) -> Option<&Arc<CaptureSet>> {
        self.capture.as_ref()
    }

    /// Its gateway's listeners and routes, for a router proxy.
    pub(crate) fn router(&self) -> Option<&Arc<RouterSet>> {
        self.router.as_ref()
    }

    /// Equal, and with the very same scope (not only an equal one: a
    /// scope builds things once for its topology generation).
    fn same_objects(&self, other: &Lens) -> bool {
        let same_scope = match (&self.scope, &other.scope) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        same_scope && self == other
    }

    /// 0 for the plain view; equal lenses, equal digests.
    pub(crate) fn digest(&self) -> u64 {
        self.scope.as_ref().map_or(0, |s| s.digest)
            ^ self.capture.as_ref().map_or(0, |c| c.digest.rotate_left(7))
            ^ self
                .router
                .as_ref()
                .map_or(0, |r| r.digest().rotate_left(13))
            ^ u64::from(self.certificate).rotate_right(1)
    }

    /// Whether the capture layout replaces the snapshot's resources of
    /// `kind` (listeners and routes), rather than adding to them.
    fn replaces(&self, kind: ResourceType) -> bool {
        match kind {
            ResourceType::Listener | ResourceType::Route => {
                self.capture.is_some() || self.router.is_some()
            }
            // A router's certificates come from its gateway alone.
            ResourceType::Secret => self.router.is_some(),
            ResourceType::Cluster | ResourceType::Endpoint => false,
        }
    }

    /// One resource as the proxy sees it.
    pub(crate) fn get<'a>(
        &'a self,
        snap: &'a Snapshot,
        client: Client,
        kind: ResourceType,
        name: &str,
    ) -> Option<&'a Arc<Resource>> {
        if let Some(router) = &self.router
            && self.replaces(kind)
        {
            return router.get(kind, name);
        }
        if let Some(capture) = &self.capture {
            if let Some(r) = capture.get(kind, name) {
                return Some(r);
            }
            if self.replaces(kind) {
                return None;
            }
        }
        let form = Form::of(client, self.certificate);
        match &self.scope {
            None => snap.get_for(form, kind, name),
            Some(scope) => scope.get(snap, form, kind, name),
        }
    }

    /// The names a wildcard subscription of `kind` covers and `also`
    /// (sorted, distinct), in name order. Out of scope names among them
    /// are filtered by [`Lens::get`], not here.
    pub(crate) fn wildcard_names_and<'a>(
        &self,
        snap: &Snapshot,
        kind: ResourceType,
        also: impl Iterator<Item = &'a Arc<str>>,
    ) -> Vec<Arc<str>> {
        let snapshot_names = snap.resources(kind).resources.keys();
        // With the resources only the namespaced rules its scope sees have.
        let added = self
            .scope
            .as_ref()
            .map(|s| s.added_names(snap, kind))
            .unwrap_or_default();
        let with_added;
        let all: Box<dyn Iterator<Item = &Arc<str>>> = if added.is_empty() {
            Box::new(snapshot_names)
        } else {
            with_added = merge_sorted(snapshot_names, added.iter());
            Box::new(with_added.iter())
        };
        if let Some(router) = &self.router
            && self.replaces(kind)
        {
            return merge_sorted(router.names(kind).iter(), also);
        }
        let Some(capture) = &self.capture else {
            return merge_sorted(all, also);
        };
        let own = capture.names(kind);
        if self.replaces(kind) {
            return merge_sorted(own.iter(), also);
        }
        merge_sorted(merge_sorted(all, own.iter()).iter(), also)
    }
}

/// The sorted union of two sorted runs of distinct names.
pub(crate) fn merge_sorted<'a, 'b>(
    a: impl Iterator<Item = &'a Arc<str>>,
    b: impl Iterator<Item = &'b Arc<str>>,
) -> Vec<Arc<str>> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    let mut out = Vec::with_capacity(a.size_hint().0.max(b.size_hint().0));
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match (*x).cmp(*y) {
                std::cmp::Ordering::Less => a.next(),
                std::cmp::Ordering::Greater => b.next(),
                std::cmp::Ordering::Equal => {
                    b.next();
                    a.next()
                }
            },
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => return out,
        };
        if let Some(n) = next {
            out.push(n.clone());
        }
    }
}

/// Makes lenses for a server's connections, sharing scopes and capture
/// layouts between alike proxies (each cache bounded; see their modules).
#[derive(Default)]
pub(crate) struct Lenses {
    scoping: ScopeConfig,
    capture: CaptureOptions,
    scopes: ScopeCache,
    captures: CaptureCache,
    routers: RouterCache,
}

impl Lenses {
    /// Lenses under these mesh-wide settings.
    pub(crate) fn new(scoping: ScopeConfig, capture: CaptureOptions) -> Lenses {
        Lenses {
            scoping,
            capture,
            ..Default::default()
        }
    }
}

/// One connection's lens, and what it was looked up for.
#[derive(Default)]
pub(crate) struct ProxyLens {
    /// The namespace whose scope the proxy gets: the one it proved, else
    /// the one it claims.
    namespace: Option<String>,
    /// The (topology, snapshot) generations it was last looked up for.
    looked_up: Option<(u64, u64)>,
    /// Its Sidecar's ingress listeners as inbound ports (capture mode),
    /// looked up again only when the topology moves (scope rules are part
    /// of it), not at every endpoint push.
    ingress: Vec<crate::translate::capture::InboundPort>,
    lens: Lens,
}

impl ProxyLens {
    /// The lens of a proxy scoped by `namespace` (proved, else claimed).
    pub(crate) fn new(namespace: Option<String>) -> ProxyLens {
        ProxyLens {
            namespace,
            ..Default::default()
        }
    }

    /// The proxy's lens for `snap` when it differs from the one it had or
    /// is an equal one of a newer topology generation; `None` when
    /// nothing it depends on moved or it came out the same.
    pub(crate) fn refresh(
        &mut self,
        lenses: &Lenses,
        snap: &Snapshot,
        identity: &NodeIdentity,
    ) -> Option<&Lens> {
        let router_mode = identity.gateway.is_some();
        let capture_mode = identity.mode == Interception::Capture && !router_mode;
        let topology_moved = self
            .looked_up
            .is_none_or(|(t, _)| t != snap.topology_generation);
        let snapshot_moved = self.looked_up.is_none_or(|(_, g)| g != snap.generation);
        if !(topology_moved || capture_mode && snapshot_moved) {
            return None;
        }
        self.looked_up = Some((snap.topology_generation, snap.generation));
        let scope = if topology_moved {
            lenses.scopes.get(
                snap,
                &lenses.scoping,
                self.namespace.as_deref(),
                &identity.labels,
            )
        } else {
            self.lens.scope.clone()
        };
        // The workload's peer authentication (only what mutual TLS reads).
        let peer = if capture_mode && identity.workload_certs {
            sextant_core::rules::peer::select(
                &snap.view().scopes,
                &lenses.scoping.root_namespace,
                self.namespace.as_deref(),
                &identity.labels,
            )
        } else {
            sextant_core::rules::PeerModes::default()
        };
        // Its authorization policies, which its inbound chains enforce.
        let authz = if capture_mode {
            crate::capture::Policies(sextant_core::rules::authz::select(
                &snap.view().scopes,
                &lenses.scoping.root_namespace,
                self.namespace.as_deref(),
                &identity.labels,
            ))
        } else {
            crate::capture::Policies::default()
        };
        // Its Sidecar's ingress listeners, which replace the ports found
        // from its endpoints.
        if capture_mode && topology_moved {
            self.ingress = ingress_ports(
                snap,
                &lenses.scoping.root_namespace,
                self.namespace.as_deref(),
                identity,
            );
        }
        let capture = capture_mode.then(|| {
            lenses.captures.get(
                snap,
                &lenses.capture,
                scope.as_ref(),
                &identity.ips,
                identity.workload_certs,
                &peer,
                &authz,
                &self.ingress,
            )
        });
        // A router: its gateway's listeners, looked up again with the
        // topology (they do not follow endpoints).
        let router = match &identity.gateway {
            Some((ns, name)) if topology_moved => Some(
                lenses.routers.get(
                    snap,
                    (ns, name),
                    crate::translate::gateway::GatewayAddress {
                        bind: identity
                            .gateway_bind
                            .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])),
                        port_offset: identity.gateway_port_offset.unwrap_or(0),
                    },
                    scope.as_ref(),
                ),
            ),
            Some(_) => self.lens.router.clone(),
            None => None,
        };
        let lens = Lens {
            scope,
            capture,
            router,
            certificate: identity.workload_certs,
        };
        // An equal lens looked up for a newer topology is still taken: what
        // it builds once (the scoped route table, the names only its
        // namespace's rules have) belongs to its generation. The
        // connection starts over only when the lens differs
        // ([`crate::server::conn`]'s `set_lens`).
        if lens.same_objects(&self.lens) {
            return None;
        }
        self.lens = lens;
        Some(&self.lens)
    }
}

/// The inbound ports the ingress listeners of the scope rule in force for
/// a proxy give it (none: the ports of its endpoints apply). A listener
/// that cannot deliver is left out (validation names it).
fn ingress_ports(
    snap: &Snapshot,
    root_namespace: &str,
    namespace: Option<&str>,
    identity: &NodeIdentity,
) -> Vec<crate::translate::capture::InboundPort> {
    use sextant_core::rules::{Deliver, Selected, scope::select};
    let Selected::Rule(rule) = select(
        &snap.view().scopes,
        root_namespace,
        namespace,
        &identity.labels,
    ) else {
        return Vec::new();
    };
    let Some(s) = rule.as_scope() else {
        return Vec::new();
    };
    s.ingress
        .iter()
        .filter_map(|l| {
            let deliver = match l.deliver().ok()? {
                Deliver::Loopback(to) => to,
                Deliver::Instance(port) => std::net::SocketAddr::new(*identity.ips.first()?, port),
            };
            Some(crate::translate::capture::InboundPort {
                port: l.port.number,
                protocol: l.protocol(),
                deliver: Some(deliver),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_sorted_is_the_sorted_union() {
        let v = |xs: &[&str]| xs.iter().map(|x| Arc::<str>::from(*x)).collect::<Vec<_>>();
        let a = v(&["a", "c", "e", "f"]);
        let b = v(&["b", "c", "f", "g"]);
        assert_eq!(
            merge_sorted(a.iter(), b.iter()),
            v(&["a", "b", "c", "e", "f", "g"])
        );
        assert_eq!(merge_sorted(a.iter(), [].iter()), a);
        assert_eq!(merge_sorted([].iter(), b.iter()), b);
    }
}
