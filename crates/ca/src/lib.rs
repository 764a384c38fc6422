//! Sextant's certificate authority: workload certificates for mutual TLS
//! between sidecars, through Istio's certificate API so that Istio's own
//! agents can use it too.
//!
//! - [`authority`]: the CA's key and certificates (Istio's `cacerts`
//!   layout, a plugged intermediate or a self-signed root made on first
//!   start), reloaded when they change, and the issuing rule (one identity,
//!   the caller's proven one; a bounded lifetime);
//! - [`csr`]: what a CSR must be (bounded, signed, a strong key);
//! - [`keys`]: the CA key's PEM forms;
//! - [`proto`] and [`service`]: `IstioCertificateService/CreateCertificate`
//!   over gRPC, authenticated as xDS is;
//! - [`serving`]: Sextant's own TLS certificate, made by its CA.

#![forbid(unsafe_code)]

pub mod authority;
pub mod csr;
pub mod keys;
pub mod proto;
pub mod service;
pub mod serving;

pub use authority::{Authority, Identity, IssueError, Issued};
pub use service::{Authenticate, CaMetrics, CaService, Credentials};

use std::sync::Arc;

/// Checks `authority`'s files every [`authority::CHECK_EVERY`] until the
/// returned task is aborted; a change that does not load is logged and
/// counted, and the last good CA keeps issuing.
pub fn watch(authority: Arc<Authority>, metrics: Arc<CaMetrics>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(authority::CHECK_EVERY).await;
            let a = authority.clone();
            match tokio::task::spawn_blocking(move || a.reload_if_changed()).await {
                Ok(Ok(true)) => {
                    tracing::info!("the CA's files changed: new certificates come from the new CA")
                }
                Ok(Ok(false)) | Err(_) => {}
                Ok(Err(e)) => {
                    metrics
                        .reload_failures_total
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(error = %e, "the CA's files changed but do not load; the previous CA keeps issuing");
                }
            }
        }
    })
}
