//! Sidecar injection: what turns a namespace label into a mesh.
//!
//! One renderer ([`render::inject`]) adds the proxy to a pod; everything
//! else is a way to call it:
//! - [`manifest::inject_manifests`]: `sextant inject -f FILE`, Istio's
//!   `kube-inject`, on multi-document YAML;
//! - [`review::review`]: the mutating admission webhook's answer to an
//!   `AdmissionReview`, a JSON Patch that gives the same pod field for
//!   field (istio/istio#15837 is the bug this rules out);
//! - [`webhook`]: the webhook's HTTPS server (`sextant webhook`);
//! - [`certs`]: its certificate (`sextant webhook certs`);
//! - [`probes`]: the application's HTTP and TCP probes, pointed at the
//!   agent so that they work under STRICT mutual TLS and capture;
//! - [`audit`]: the pods of injection-enabled namespaces that escaped
//!   injection or carry an older template (`sextant inject --audit`).
//!
//! What is injected is one document, the [`template::Template`].

#![forbid(unsafe_code)]

pub mod audit;
pub mod certs;
pub mod manifest;
pub mod probes;
pub mod render;
pub mod review;
pub mod template;
pub mod webhook;

pub use render::{Outcome, Skip};
pub use template::Template;
