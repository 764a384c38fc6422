//! One connection's task: the protocol's steps in order, around the
//! per-connection state of [`super::conn`].
//!
//! Each turn: wait for a request, a newer snapshot or a deadline; apply
//! what arrived; on the first request, decide whether the stream may be
//! served; take the newest snapshot with the plans connections share for
//! it; look again through the proxy's lens if what it sees may have moved;
//! send every response that is due; show the state on the debug endpoint.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};
use tracing::{debug, info, warn};

use super::authorize::{authorize, scope_namespace};
use super::codec::{Outbound, Wire};
use super::conn::{ConnState, RequestOutcome, Serving};
use super::grpc::ResponseStream;
use super::register::{Arrival, Registration};
use super::status::{Metrics, Peer, Registered};
use super::{Shared, lock};
use crate::lens::ProxyLens;

/// Starts the task serving one ADS stream; returns its responses.
pub(crate) fn start<Req, F>(
    shared: &Arc<Shared>,
    wire: Wire,
    peer: Peer,
    requests: Streaming<Req>,
    on_request: F,
) -> ResponseStream
where
    Req: Send + 'static,
    F: Fn(&mut ConnState, Req) -> RequestOutcome + Send + 'static,
{
    let shared = shared.clone();
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let registered = Arc::new(Registered::new(id, wire, peer));
    lock(&shared.connections).insert(id, registered.clone());
    Metrics::add(&shared.metrics.connections_active, 1);
    Metrics::add(&shared.metrics.connections_total, 1);
    // Small: a client that does not read its responses stalls only its
    // own task, which then stops reading its requests.
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        // Deregistered however the task ends, a panic included: a
        // connection that a bug ends must not stay listed or counted.
        // (The connection is a local of this task and `run` borrows it: a
        // `run(self)` would make the task's future hold it twice, about
        // 3 KiB more per connection, measured.)
        let _registered = Deregister {
            shared: shared.clone(),
            id,
        };
        let mut connection = Connection {
            shared: &shared,
            registered: &registered,
            state: ConnState::new(wire, shared.subscriptions.clone()),
            tx,
            serving: None,
            lens: None,
            warned_types: Vec::new(),
            journaled_nacks: Default::default(),
            registration: None,
        };
        connection.run(requests, on_request).await;
        debug!(node = %connection.state.node_id, "connection closed");
        connection.leave();
        // The mirror shares the connection's subscribed names: let go of
        // them first, so that the pruning below sees them unused.
        registered.forget_subscriptions();
        // Its subscriptions go back to the server's table, then the plans
        // only it could use leave the current snapshot's cache.
        drop(connection);
        shared.plans.current().prune_unused();
    });
    Box::pin(ReceiverStream::new(rx))
}

/// Removes a connection from the server's table when its task ends.
struct Deregister {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Deregister {
    fn drop(&mut self) {
        lock(&self.shared.connections).remove(&self.id);
        self.shared
            .metrics
            .connections_active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// What ends a connection's loop.
struct Ended;

struct Connection<'a> {
    shared: &'a Shared,
    registered: &'a Registered,
    state: ConnState,
    tx: mpsc::Sender<Result<Outbound, Status>>,
    /// The snapshot served, with the plans connections share for it.
    serving: Option<Serving>,
    /// What the proxy sees, once it may be served (`None` before).
    lens: Option<ProxyLens>,
    /// Unknown type URLs already warned about (at most 16).
    warned_types: Vec<String>,
    /// Per type, the error of the last NACK recorded in the journal: a
    /// proxy that rejects every push with the same error is recorded once.
    journaled_nacks: [Option<String>; crate::resource::ResourceType::COUNT],
    /// The workload this stream registered, if its node named a
    /// WorkloadGroup (boxed: most connections have none).
    registration: Option<Box<Registration>>,
}

impl Connection<'_> {
    async fn run<Req, F>(&mut self, mut requests: Streaming<Req>, on_request: F)
    where
        F: Fn(&mut ConnState, Req) -> RequestOutcome,
    {
        let ack_timeout = self.shared.config.ack_timeout;
        let mut snapshots = self.shared.snapshots.clone();
        // One timer, moved only when the deadline moves: a new one per loop
        // turn registered a timer per request (a visible cost in the storm).
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed = None;
        loop {
            let deadline = self.state.next_deadline(ack_timeout);
            if let Some(d) = deadline
                && armed != Some(d)
            {
                timer.as_mut().reset(d);
                armed = Some(d);
            }
            let turn = tokio::select! {
                message = requests.message() => match message {
                    Ok(Some(req)) => {
                        let outcome = on_request(&mut self.state, req);
                        self.count(outcome);
                        Ok(())
                    }
                    Ok(None) => Err(Ended),
                    Err(status) => {
                        debug!(node = %self.state.node_id, error = %status, "stream ended with an error");
                        // Tell the client why (a malformed request, for instance).
                        let _ = self.tx.send(Err(status)).await;
                        Err(Ended)
                    }
                },
                // The publisher is gone: the process is shutting down.
                changed = snapshots.changed() => changed.map_err(|_| Ended),
                // Someone asks what the client holds (`sextant status NODE`):
                // answered here, between two steps; nothing else to do.
                () = self.registered.asked.notified() => {
                    self.registered.answer_held(&self.state);
                    continue;
                }
                () = &mut timer, if deadline.is_some() => {
                    self.expire_acks();
                    Ok(())
                }
            };
            if turn.is_err() || self.authorize_once().await.is_err() {
                break;
            }
            let newest = snapshots.borrow_and_update().clone();
            self.serve(newest);
            self.look_through_lens();
            if self.send_due().await.is_err() {
                break;
            }
            self.registered
                .show(&self.state, self.serving.as_ref().map(|s| &*s.snap));
        }
    }

    /// Counts what a request was, and records a NACK.
    fn count(&mut self, outcome: RequestOutcome) {
        let metrics = &self.shared.metrics;
        let node = &self.state.node_id;
        match outcome {
            RequestOutcome::Applied => {}
            RequestOutcome::Ack(kind, waited, converged) => {
                metrics.ack_latency.observe(waited);
                if let Some(c) = converged {
                    metrics.convergence[kind.index()].observe(c);
                }
                debug!(%node, r#type = %kind, ?waited, "acknowledged");
            }
            RequestOutcome::StaleNonce => Metrics::add(&metrics.stale_nonces_total, 1),
            RequestOutcome::Health(health) => {
                if let Some(r) = &self.registration {
                    debug!(%node, entry = %r.entry, ?health, "health reported");
                    r.held.set_health(health);
                }
            }
            RequestOutcome::UnknownType(url) => {
                Metrics::add(&metrics.unknown_type_requests_total, 1);
                if !self.warned_types.contains(&url) && self.warned_types.len() < 16 {
                    warn!(%node, type_url = %url, "request for a resource type Sextant does not serve; ignored");
                    self.warned_types.push(url);
                }
            }
            RequestOutcome::Nack(record) => {
                Metrics::add(&metrics.nacks_total[record.kind.index()], 1);
                warn!(node = %record.node_id, r#type = %record.kind, version = %record.version,
                    resources = ?record.resources, error = %record.error, "proxy rejected configuration (NACK); not resending it");
                let last = &mut self.journaled_nacks[record.kind.index()];
                if last.as_deref() != Some(record.error.as_str()) {
                    *last = Some(record.error.clone());
                    metrics.journal.record(
                        sextant_core::journal::Kind::Nack,
                        record.node_id.as_str(),
                        format!(
                            "{} version {} rejected ({} resources): {}",
                            record.kind,
                            record.version,
                            record.resources.len(),
                            record.error
                        ),
                    );
                }
                let mut nacks = lock(&self.shared.nacks);
                if nacks.len() >= self.shared.config.nack_history {
                    nacks.pop_front();
                }
                nacks.push_back(record);
            }
        }
    }

    /// Gives up on acknowledgements overdue by the ACK timeout.
    fn expire_acks(&mut self) {
        for kind in self.state.expire_in_flight(self.shared.config.ack_timeout) {
            Metrics::add(&self.shared.metrics.ack_timeouts_total, 1);
            warn!(node = %self.state.node_id, r#type = %kind, "no ACK within the timeout; assuming the response was received");
        }
    }

    /// On the first request (it carries the node): whether the stream may
    /// be served, and who the proxy proved to be. A refusal is sent as the
    /// stream's status and ends it.
    async fn authorize_once(&mut self) -> Result<(), Ended> {
        if self.lens.is_some() || !self.state.requests_seen() {
            return Ok(());
        }
        let peer = lock(&self.registered.peer).clone();
        match authorize(&self.shared.config, &peer, &self.state.identity).await {
            Ok(identity) => {
                let namespace = scope_namespace(identity.as_deref(), &self.state.identity);
                if let Some(group) = self.state.identity.group.clone() {
                    let ns = namespace.as_deref().unwrap_or("default");
                    if let Err(why) = self.register(ns, &group) {
                        let _ = self.tx.send(Err(Status::failed_precondition(why))).await;
                        return Err(Ended);
                    }
                }
                self.lens = Some(ProxyLens::new(namespace));
                lock(&self.registered.peer).identity = identity;
                Ok(())
            }
            Err(refusal) => {
                Metrics::add(&self.shared.metrics.identity_refused_total, 1);
                let node = &self.state.node_id;
                if self.shared.first_refusal(node, refusal.message()) {
                    warn!(%node, peer = ?peer.addr, identity = ?peer.identity, "xDS stream refused: {} (logged once per node and reason; every refusal is counted in sextant_xds_identity_refused_total)", refusal.message());
                } else {
                    debug!(%node, "xDS stream refused again: {}", refusal.message());
                }
                let _ = self.tx.send(Err(refusal)).await;
                Err(Ended)
            }
        }
    }

    /// Registers the workload from `namespace/group` (see
    /// [`super::register`]); `Err` says why the stream is refused.
    fn register(&mut self, namespace: &str, group: &str) -> Result<(), String> {
        let node = self.state.node_id.clone();
        let journal = &self.shared.metrics.journal;
        let metrics = &self.shared.metrics;
        // An agent refused retries every few seconds: logged and
        // journaled once per node and reason, as refused identities are;
        // every refusal counted.
        let refused = |why: String| {
            Metrics::add(&metrics.workload_registrations_refused_total, 1);
            if self.shared.first_refusal(&node, &why) {
                warn!(%node, %namespace, %group, "auto-registration refused: {why} (logged once per node and reason)");
                journal.record(
                    sextant_core::journal::Kind::Workload,
                    &node,
                    format!("not registered from WorkloadGroup {namespace}/{group}: {why}"),
                );
            } else {
                debug!(%node, "auto-registration refused again: {why}");
            }
            why
        };
        let Some(registrar) = &self.shared.config.registrar else {
            return Err(refused(
                "the node names a WorkloadGroup (AUTO_REGISTER_GROUP) and auto-registration is off"
                    .into(),
            ));
        };
        let Some(&address) = self.state.identity.ips.first() else {
            return Err(refused(
                "the node names no address (INSTANCE_IPS) to register".into(),
            ));
        };
        let arrival = Arrival {
            namespace,
            group,
            address,
            network: self.state.identity.network.as_deref(),
            node_id: &node,
        };
        let registration = registrar.0.arrive(&arrival).map_err(refused)?;
        if let Some(health) = self.state.health {
            registration.held.set_health(health);
        }
        info!(%node, entry = %registration.entry, "workload registered");
        journal.record(
            sextant_core::journal::Kind::Workload,
            &node,
            format!(
                "registered as WorkloadEntry {} from WorkloadGroup {namespace}/{group}",
                registration.entry
            ),
        );
        self.registration = Some(Box::new(registration));
        Metrics::add(&metrics.workloads_registered, 1);
        Ok(())
    }

    /// The stream ended: its workload, if it registered one, leaves once
    /// the grace period has passed (unless it is back by then).
    fn leave(&mut self) {
        if let Some(r) = self.registration.take() {
            self.shared
                .metrics
                .workloads_registered
                .fetch_sub(1, Ordering::Relaxed);
            info!(node = %self.state.node_id, entry = %r.entry, "registered workload disconnected");
            self.shared.metrics.journal.record(
                sextant_core::journal::Kind::Workload,
                &self.state.node_id,
                format!(
                    "disconnected; WorkloadEntry {} leaves after the grace period unless it returns",
                    r.entry
                ),
            );
        }
    }

    /// Serves `newest`, with the plan cache connections share for it
    /// (looked up once per snapshot, not per turn).
    fn serve(&mut self, newest: Arc<crate::snapshot::Snapshot>) {
        if self
            .serving
            .as_ref()
            .is_none_or(|s| !Arc::ptr_eq(&s.snap, &newest))
        {
            self.serving = Some(self.shared.plans.serving(newest));
        }
    }

    /// What the proxy sees of the snapshot served: looked up again only
    /// when what it depends on moved (see [`ProxyLens::refresh`]).
    fn look_through_lens(&mut self) {
        let (Some(lens), Some(serving)) = (&mut self.lens, &self.serving) else {
            return;
        };
        if let Some(changed) = lens.refresh(&self.shared.lenses, serving, &self.state.identity) {
            self.registered.show_lens(changed);
            self.state.set_lens(changed);
        }
    }

    /// Sends every response due now: each type has its own response in
    /// flight, and each step sends at most one, so this ends.
    async fn send_due(&mut self) -> Result<(), Ended> {
        let Some(serving) = &self.serving else {
            return Ok(());
        };
        let metrics = &self.shared.metrics;
        let mut closed = false;
        while let Some(out) = self.state.pump(serving) {
            let i = out.kind.index();
            Metrics::add(&metrics.responses_total[i], 1);
            Metrics::add(&metrics.resources_sent_total[i], out.resources.len() as u64);
            Metrics::add(&metrics.bytes_sent_total, out.encoded_len() as u64);
            if let Some(changed) = out.changed_at {
                metrics.sent_after_change[i].observe(changed.elapsed());
            }
            debug!(node = %self.state.node_id, r#type = %out.kind, resources = out.resources.len(), removed = out.removed.len(), nonce = %out.nonce, "sending");
            if self.tx.send(Ok(out)).await.is_err() {
                closed = true;
                break;
            }
        }
        // Most turns plan nothing: no write to the shared counters then.
        match self.state.take_plan_counts() {
            (0, 0) => {}
            (computed, shared) => {
                Metrics::add(&metrics.plans_computed_total, computed);
                Metrics::add(&metrics.plans_shared_total, shared);
            }
        }
        if closed { Err(Ended) } else { Ok(()) }
    }
}
