//! The example adapter against a small HTTP server, then through the whole
//! control plane.
#![allow(clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sextant::core::{Error, Event, Registry};
use sextant_example_http_registry::HttpRegistry;
use sextant_testkit::events::next;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves whatever (status, body) the shared cell holds.
async fn inventory_server(reply: Arc<Mutex<(u16, String)>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let reply = reply.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let (status, body) = reply.lock().expect("lock").clone();
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/inventory.json")
}

#[tokio::test]
async fn polls_reports_bad_entries_and_outages() {
    let good = r#"{"services":[{"hostname":"cart.shop.svc","ports":[{"name":"http","port":8080}],"endpoints":[{"address":"10.0.0.7"}]},{"hostname":"BAD","bogus":1}]}"#;
    let reply = Arc::new(Mutex::new((200, good.to_owned())));
    let url = inventory_server(reply.clone()).await;
    let registry = HttpRegistry::new("test", url, Duration::from_millis(50));
    let mut events = registry.watch();
    match next(&mut events).await {
        Ok(Event::Reset(services)) => assert_eq!(services.len(), 1),
        other => panic!("{other:?}"),
    }
    match next(&mut events).await {
        Err(Error::InvalidObject { object, .. }) => {
            assert!(object.ends_with("services[1]"), "{object}")
        }
        other => panic!("{other:?}"),
    }
    // Unchanged reads repeat nothing: the bad entry is not reported again.
    for _ in 0..3 {
        match next(&mut events).await {
            Ok(Event::Unchanged) => {}
            other => panic!("{other:?}"),
        }
    }
    *reply.lock().expect("lock") = (500, "oops".into());
    loop {
        match next(&mut events).await {
            Err(e) if e.makes_stale() => break,
            Ok(Event::Unchanged) => continue,
            other => panic!("{other:?}"),
        }
    }
    *reply.lock().expect("lock") = (200, r#"{"services":[]}"#.into());
    loop {
        if let Ok(Event::Reset(services)) = next(&mut events).await {
            assert!(services.is_empty());
            break;
        }
    }
}

#[tokio::test]
async fn runs_through_the_embedding_api() {
    let body = r#"{"services":[{"hostname":"cart.shop.svc","ports":[{"name":"http","port":8080}],"endpoints":[{"address":"10.0.0.7"}]}]}"#;
    let url = inventory_server(Arc::new(Mutex::new((200, body.into())))).await;
    let running = sextant::Sextant::new()
        .registry(HttpRegistry::new("inventory", url, Duration::from_secs(5)))
        .xds_addr("127.0.0.1:0".parse().expect("addr"))
        .admin_addr(None)
        .start()
        .await
        .expect("start");
    let view = running.aggregator().ready().await.expect("ready");
    assert!(view.services.contains_key("cart.shop.svc"));
    running.shutdown().await;
}

/// The inventory server failing with 500, then answering again.
struct Failing(Arc<Mutex<(u16, String)>>);

impl sextant_testkit::contract::Outage for Failing {
    async fn begin(&mut self) {
        *self.0.lock().expect("lock") = (500, "oops".into());
    }
    async fn end(&mut self) {
        *self.0.lock().expect("lock") = (200, r#"{"services":[]}"#.into());
    }
}

/// The contract every adapter keeps, checked the way the built-in adapters
/// check it: an adapter of your own can run the same test.
#[tokio::test]
async fn keeps_the_registry_contract() {
    let reply = Arc::new(Mutex::new((200, r#"{"services":[]}"#.to_owned())));
    let url = inventory_server(reply.clone()).await;
    let registry = HttpRegistry::new("contract", url, Duration::from_millis(50));
    sextant_testkit::contract::registry_contract(&registry, Some(&mut Failing(reply))).await;
}
