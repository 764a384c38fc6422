//! Whether a stream may be served, decided on its first request (which
//! carries the node): the identity the server's mode counts (a client
//! certificate's, or a bearer token's once [`super::auth`] validated it),
//! checked against the namespace the node claims. A refused stream is sent
//! nothing.

use tonic::Status;

use super::auth::XdsAuth;
use super::config::ServerConfig;
use super::status::Peer;
use super::tls::spiffe_namespace;
use crate::identity::NodeIdentity;

/// Who the node proved to be (`None`: nothing, where the mode allows
/// that), or why it is refused: where the server requires an identity it
/// must have one, and its claimed namespace must be the identity's.
pub(crate) async fn authorize(
    config: &ServerConfig,
    peer: &Peer,
    claim: &NodeIdentity,
) -> Result<Option<String>, Status> {
    let cert = peer.identity.clone();
    let token = match (config.auth, &cert) {
        (XdsAuth::Token, _) | (XdsAuth::Any, None) => match (&config.tokens, &peer.token) {
            (Some(v), Some(t)) => Some(v.0.validate(t.expose()).await.map_err(|e| {
                Status::unauthenticated(format!("the bearer token was not accepted: {e}"))
            })?),
            _ => None,
        },
        _ => None,
    };
    let identity = match config.auth {
        XdsAuth::None | XdsAuth::Mtls => cert,
        XdsAuth::Token => token,
        XdsAuth::Any => cert.or(token),
    };
    let Some(id) = identity else {
        return match config.auth {
            XdsAuth::None => Ok(None),
            XdsAuth::Mtls => Err(Status::unauthenticated(
                "this server requires a client certificate with a SPIFFE id (--xds-auth mtls); connect to its TLS port with one",
            )),
            XdsAuth::Token => Err(Status::unauthenticated(
                "this server requires a bearer token in the authorization metadata (--xds-auth token)",
            )),
            XdsAuth::Any => Err(Status::unauthenticated(
                "this server requires a client certificate with a SPIFFE id or a bearer token (--xds-auth any)",
            )),
        };
    };
    match (spiffe_namespace(&id), claim.namespace.as_deref()) {
        (None, _) => Err(Status::permission_denied(format!(
            "the proved identity {id:?} is not of the form spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/ACCOUNT"
        ))),
        (Some(ns), Some(claim)) if ns != claim => Err(Status::permission_denied(format!(
            "the node claims namespace {claim:?} but proved {id} (namespace {ns:?})"
        ))),
        // A router serves only a gateway of the namespace it proved.
        (Some(ns), _) if claim.gateway.as_ref().is_some_and(|(g, _)| g != ns) => {
            let (g, name) = claim.gateway.clone().unwrap_or_default();
            Err(Status::permission_denied(format!(
                "the router asks to serve gateway {g}/{name} but proved {id} (namespace {ns:?}): a router serves the gateways of its own namespace"
            )))
        }
        _ => Ok(Some(id)),
    }
}

/// The namespace whose scope a proxy gets: the one its identity proves,
/// else the one it claims.
pub(crate) fn scope_namespace(identity: Option<&str>, claim: &NodeIdentity) -> Option<String> {
    identity
        .and_then(spiffe_namespace)
        .map(str::to_owned)
        .or_else(|| claim.namespace.clone())
}
