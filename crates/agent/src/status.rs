//! The agent's status port (Istio's 15021): `GET /healthz/ready` for the
//! kubelet's probes and `sextant agent wait`, `POST /quitquitquit` to stop
//! (jobs without native sidecars call it when their work is done), and
//! `GET /proxy` (Envoy's admin address and process, for operators),
//! `GET /metrics` (the workload certificate's expiry and renewals), and
//! `GET /app-health/CONTAINER/KIND`: the application's own probes, run by
//! the agent for the kubelet ([`crate::probes`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use tokio::sync::watch;

use crate::Shared;

#[derive(Clone)]
struct Status {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

/// Serves the status port on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
) {
    let app = Router::new()
        .route("/healthz/ready", get(ready))
        .route("/quitquitquit", post(quit))
        .route("/proxy", get(proxy))
        .route("/metrics", get(metrics))
        .route("/app-health/{*probe}", get(app_health))
        .with_state(Status { shared, stop });
    if let Err(e) = axum::serve(listener, app).await {
        tracing::warn!(error = %e, "the status port stopped");
    }
}

async fn ready(State(s): State<Status>) -> (StatusCode, String) {
    match s.shared.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn app_health(
    State(s): State<Status>,
    axum::extract::Path(probe): axum::extract::Path<String>,
) -> (StatusCode, String) {
    let (status, why) = s.shared.app_probe(&format!("/app-health/{probe}")).await;
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        why,
    )
}

async fn metrics(
    State(s): State<Status>,
) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.shared.metrics(),
    )
}

async fn quit(State(s): State<Status>) -> (StatusCode, &'static str) {
    let _ = s.stop.send(true);
    (StatusCode::OK, "draining, then exiting\n")
}

async fn proxy(State(s): State<Status>) -> (StatusCode, String) {
    match s.shared.envoy() {
        Some((admin, pid)) => (
            StatusCode::OK,
            serde_json::json!({ "admin": admin.to_string(), "pid": pid }).to_string(),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Envoy is not running\n".into(),
        ),
    }
}
