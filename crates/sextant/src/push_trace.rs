//! A trace of each push, exported over OTLP/gRPC (`--otlp-endpoint`; off
//! by default). One trace per snapshot published:
//!
//! - `push` (the root): from the first change of the batch reaching the
//!   publisher to the last connection taking the snapshot up; attributes
//!   `sextant.generation`, `sextant.trigger` (`endpoints` or
//!   `configuration`), `sextant.encoded`, `sextant.changed.{cds,eds,lds,rds}`,
//!   `sextant.connections` (those it waited for), `sextant.outcome`
//!   (`delivered`, `superseded` by a newer snapshot first, `timed out`
//!   after 30 s);
//! - `coalesce`: the first change to translation (the debounce);
//! - `translate`: the snapshot being built and encoded;
//! - `deliver`: publication to the last connection, with the events
//!   `first connection` and `last connection`: a connection takes a
//!   snapshot up when its task has looked at it and sent what it owes from
//!   it (a type still waiting for an ACK sends later). Connections are
//!   looked at every 10 ms, which is the precision of those two events.
//!
//! The timings come from the snapshot itself ([`PushTimes`]), so tracing
//! adds nothing to the publisher's path; following a push costs one look
//! at each connection's generation per 10 ms while it is delivered.
//!
//! The spans are exported by this module's own task on the server's
//! runtime: the SDK's batch processor exports from a thread of its own,
//! where the gRPC exporter finds no runtime. At most [`QUEUE`] spans wait;
//! more are dropped and counted (`sextant_push_trace_spans_total`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor};
use sextant_xds::snapshot::PushTimes;
use sextant_xds::{ResourceType, Snapshot, XdsServer};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::warn;

/// Spans waiting for export, at most.
pub const QUEUE: usize = 4096;
/// Spans per export call, at most.
const BATCH: usize = 512;
/// One export call, at most.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a push is followed to its last connection, at most.
const FOLLOW: Duration = Duration::from_secs(30);
/// How often the connections are looked at while a push is delivered.
const POLL: Duration = Duration::from_millis(10);

/// What happened to the spans.
#[derive(Debug, Default)]
pub struct SpanCounts {
    /// Exported.
    pub exported: AtomicU64,
    /// Not exported: the collector refused them or did not answer.
    pub failed: AtomicU64,
    /// Dropped: the queue was full.
    pub dropped: AtomicU64,
}

/// Hands each ended span to the export task.
#[derive(Debug)]
struct Forward {
    tx: mpsc::Sender<SpanData>,
    counts: Arc<SpanCounts>,
}

impl SpanProcessor for Forward {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.tx.try_send(span).is_err() {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// The running push traces; they stop when this is dropped.
#[derive(Debug)]
pub struct PushTraces {
    follow: JoinHandle<()>,
    export: JoinHandle<()>,
    counts: Arc<SpanCounts>,
}

impl Drop for PushTraces {
    fn drop(&mut self) {
        self.follow.abort();
        self.export.abort();
    }
}

impl PushTraces {
    /// Traces `server`'s pushes to the OTLP/gRPC collector at `endpoint`
    /// (`http://HOST:4317`). Must run on a Tokio runtime.
    pub fn start(server: XdsServer, endpoint: &str) -> anyhow::Result<PushTraces> {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| anyhow::anyhow!("the OTLP exporter for {endpoint}: {e}"))?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("sextant")
            .build();
        exporter.set_resource(&resource);
        let counts = Arc::new(SpanCounts::default());
        let (tx, mut rx) = mpsc::channel::<SpanData>(QUEUE);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Forward {
                tx,
                counts: counts.clone(),
            })
            .with_resource(resource)
            .build();
        let endpoint = endpoint.to_owned();
        let export_counts = counts.clone();
        let export = tokio::spawn(async move {
            let mut batch = Vec::new();
            let mut warned: Option<Instant> = None;
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                let n = batch.len() as u64;
                let result = tokio::time::timeout(
                    EXPORT_TIMEOUT,
                    exporter.export(std::mem::take(&mut batch)),
                )
                .await;
                let error = match result {
                    Ok(Ok(())) => {
                        export_counts.exported.fetch_add(n, Ordering::Relaxed);
                        continue;
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("no answer within {EXPORT_TIMEOUT:?}"),
                };
                export_counts.failed.fetch_add(n, Ordering::Relaxed);
                // Once a minute at most: a collector that is down stays down.
                if warned.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
                    warned = Some(Instant::now());
                    warn!(%endpoint, %error, spans = n, "push trace spans not exported");
                }
            }
        });
        let follow = tokio::spawn(async move {
            let tracer = provider.tracer("sextant");
            let mut snapshots = server.snapshots();
            snapshots.mark_unchanged();
            while snapshots.changed().await.is_ok() {
                let snap = snapshots.borrow_and_update().clone();
                if let Some(push) = snap.push {
                    follow(&tracer, &server, &mut snapshots, &snap, push).await;
                }
            }
        });
        Ok(PushTraces {
            follow,
            export,
            counts,
        })
    }

    /// What happened to the spans so far.
    pub fn counts(&self) -> Arc<SpanCounts> {
        self.counts.clone()
    }
}

/// One push's spans: made from its timings, then followed to its last
/// connection, a newer snapshot, or [`FOLLOW`].
async fn follow(
    tracer: &opentelemetry_sdk::trace::SdkTracer,
    server: &XdsServer,
    snapshots: &mut tokio::sync::watch::Receiver<Arc<Snapshot>>,
    snap: &Snapshot,
    push: PushTimes,
) {
    let (now, wall) = (Instant::now(), SystemTime::now());
    let at = |i: Instant| wall - now.saturating_duration_since(i);
    let changed = |kind: ResourceType| snap.resources(kind).changed.len() as i64;
    let root = tracer
        .span_builder("push")
        .with_start_time(at(push.first_change))
        .with_attributes([
            KeyValue::new("sextant.generation", snap.generation as i64),
            KeyValue::new(
                "sextant.trigger",
                if push.endpoints_only {
                    "endpoints"
                } else {
                    "configuration"
                },
            ),
            KeyValue::new("sextant.encoded", snap.encoded as i64),
            KeyValue::new("sextant.changed.cds", changed(ResourceType::Cluster)),
            KeyValue::new("sextant.changed.eds", changed(ResourceType::Endpoint)),
            KeyValue::new("sextant.changed.lds", changed(ResourceType::Listener)),
            KeyValue::new("sextant.changed.rds", changed(ResourceType::Route)),
        ])
        .start(tracer);
    let cx = Context::current_with_span(root);
    let step = |name: &'static str, from: Instant, to: Instant| {
        tracer
            .span_builder(name)
            .with_start_time(at(from))
            .start_with_context(tracer, &cx)
            .end_with_timestamp(at(to));
    };
    step("coalesce", push.first_change, push.translate_started);
    step("translate", push.translate_started, push.published);
    let mut deliver = tracer
        .span_builder("deliver")
        .with_start_time(at(push.published))
        .start_with_context(tracer, &cx);

    // The connections being served when it came (a connection still
    // waiting for its first snapshot shows generation 0).
    let generation = snap.generation;
    let deadline = now + FOLLOW;
    let mut first = false;
    let (outcome, waited_for) = loop {
        let generations = server.connection_generations();
        let serving = generations.iter().filter(|g| **g > 0).count();
        let behind = generations
            .iter()
            .filter(|g| **g > 0 && **g < generation)
            .count();
        if !first && serving > behind {
            first = true;
            deliver.add_event_with_timestamp("first connection", SystemTime::now(), Vec::new());
        }
        if behind == 0 {
            if serving > 0 {
                deliver.add_event_with_timestamp("last connection", SystemTime::now(), Vec::new());
            }
            break ("delivered", serving);
        }
        if snapshots.has_changed().unwrap_or(true) {
            break ("superseded", serving);
        }
        if Instant::now() >= deadline {
            break ("timed out", serving);
        }
        tokio::time::sleep(POLL).await;
    };
    let end = SystemTime::now();
    let outcome = [
        KeyValue::new("sextant.outcome", outcome),
        KeyValue::new("sextant.connections", waited_for as i64),
    ];
    deliver.set_attributes(outcome.clone());
    deliver.end_with_timestamp(end);
    let root = cx.span();
    root.set_attributes(outcome);
    root.end_with_timestamp(end);
}

/// The spans' fate on `/metrics`.
#[derive(Debug)]
pub struct PushTraceMetrics(pub Arc<SpanCounts>);

impl crate::admin::Collector for PushTraceMetrics {
    fn encode(
        &self,
        encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        let c = &self.0;
        crate::admin::Families::new(encoder).counters(
            "sextant_push_trace_spans_total",
            "Spans of push traces: exported, failed (the collector refused them or did not answer) or dropped (the export queue was full).",
            [
                ("exported", &c.exported),
                ("failed", &c.failed),
                ("dropped", &c.dropped),
            ]
            .map(|(outcome, n)| {
                (
                    vec![("outcome", outcome.to_owned())],
                    n.load(Ordering::Relaxed),
                )
            }),
        )
    }
}
