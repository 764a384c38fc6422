//! Connections that stop short of, or go quiet after, the HTTP/2 handshake
//! are closed; live clients are not. Short timeouts keep the test quick;
//! waits are bounded guards against hangs.
#![allow(clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use sextant_testkit::ads::{SotwClient, types};
use sextant_xds::{Metrics, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
const SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

fn quick() -> Options {
    Options {
        server: ServerConfig {
            handshake_timeout: Duration::from_millis(500),
            keepalive_interval: Duration::from_millis(300),
            keepalive_timeout: Duration::from_millis(300),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Reads (and ignores, never answering a PING) until the server closes;
/// how long that took, if within `bound`.
async fn closed_after(conn: &mut TcpStream, bound: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at((start + bound).into(), conn.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

#[tokio::test]
async fn a_connection_that_stops_short_of_the_preface_is_closed() {
    let h = start_with(
        sextant_core::MemoryRegistry::new("memory/test"),
        vec![svc("a.svc", &["10.0.0.1"])],
        quick(),
    )
    .await;
    let mut conn = TcpStream::connect(h.addr).await.expect("connect");
    conn.write_all(&PREFACE[..10]).await.expect("write");
    let took = closed_after(&mut conn, Duration::from_secs(10)).await;
    assert!(took.is_some(), "a partial preface was kept");
    let m = h.server.metrics();
    assert_eq!(Metrics::get(&m.handshake_timeouts_total), 1);
}

#[tokio::test]
async fn a_connection_that_stops_answering_pings_is_closed_and_a_live_one_is_not() {
    let h = start_with(
        sextant_core::MemoryRegistry::new("memory/test"),
        vec![svc("a.svc", &["10.0.0.1"])],
        quick(),
    )
    .await;
    // A live client (its HTTP/2 stack answers pings) on the same server.
    let mut live = SotwClient::connect(h.addr, "live").await;
    live.subscribe(types::CDS, &[]).await;
    let cds = live.recv().await;
    live.ack(&cds, &[]).await;

    // The whole handshake, then silence: pings go unanswered.
    let mut quiet = TcpStream::connect(h.addr).await.expect("connect");
    quiet.write_all(PREFACE).await.expect("write");
    quiet.write_all(&SETTINGS).await.expect("write");
    let took = closed_after(&mut quiet, Duration::from_secs(10)).await;
    assert!(took.is_some(), "a connection that ignores pings was kept");
    eprintln!("closed {took:?} after its handshake");
    let m = h.server.metrics();
    assert_eq!(
        Metrics::get(&m.handshake_timeouts_total),
        0,
        "it did shake hands"
    );

    // Several ping rounds later the live client is still served.
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.registry.insert(svc("b.svc", &["10.0.0.2"]));
    let next = live.recv().await;
    assert_eq!(next.type_url, types::CDS);
    assert_eq!(next.resources.len(), 4);
}
