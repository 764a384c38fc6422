use std::net::IpAddr;
use std::time::Duration;

use sextant_core::{Endpoint, Event, MemoryRegistry, Protocol, Registry, Resolution, Service};
use sextant_testkit::dns::CountingDns;
use sextant_testkit::events::{addresses, next, next_apply, next_reset};

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn resolver(dns: &CountingDns) -> Resolver {
    Resolver::new(Settings {
        servers: vec![dns.addr()],
        timeout: Duration::from_millis(300),
        retry: Duration::from_millis(100),
        ..Settings::default()
    })
    .expect("resolver")
}

fn named(host: &str, name: &str) -> Service {
    let mut e = Endpoint::new(name.parse().expect("name")).with_port("http", 8080);
    e.labels.insert("zone".into(), "a".into());
    e.weight = 3;
    Service::new(host)
        .with_port("http", 80, Protocol::Http)
        .with_endpoint(e)
        .with_endpoint(Endpoint::new(ip("10.9.9.9").into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_leave_as_addresses_and_follow_their_answers() {
    let dns = CountingDns::start().await;
    dns.set("db.example.com", &[ip("10.0.0.1"), ip("10.0.0.2")], 1);
    let r = resolver(&dns);
    let memory = MemoryRegistry::new("memory/a");
    memory.insert(named("db.ext", "db.example.com"));
    let mut w = r.wrap(memory.clone()).watch();
    // The first state already carries the addresses: the name was
    // waited for.
    let s = next_reset(&mut w).await.remove(0);
    assert_eq!(addresses(&s), ["10.0.0.1", "10.0.0.2", "10.9.9.9"]);
    let resolved = s
        .endpoints
        .iter()
        .find(|e| e.address.to_string() == "10.0.0.1")
        .expect("resolved endpoint");
    assert_eq!((resolved.weight, resolved.ports["http"]), (3, 8080));
    assert_eq!(resolved.labels["zone"], "a");

    // The answer changes: after its TTL the service follows.
    dns.set("db.example.com", &[ip("10.0.0.3")], 1);
    let s = next_apply(&mut w, "db.ext").await;
    assert_eq!(addresses(&s), ["10.0.0.3", "10.9.9.9"]);

    // The server fails: the last good answer stays, the failure shows.
    dns.fail("db.example.com");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while r.status()[0].error.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no failure seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = &r.status()[0];
    assert_eq!(status.addresses, [ip("10.0.0.3")]);
    assert!(status.error.as_deref().is_some_and(|e| !e.is_empty()));
    assert!(r.counts().failed >= 1);
    // Nothing was sent meanwhile: the service did not change.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), next(&mut w))
            .await
            .is_err()
    );
    // Back: the new answer arrives, the error clears.
    dns.set("db.example.com", &[ip("10.0.0.4")], 1);
    let s = next_apply(&mut w, "db.ext").await;
    assert_eq!(addresses(&s), ["10.0.0.4", "10.9.9.9"]);
    assert!(r.status()[0].error.is_none());

    // Deleted: the name is no longer followed, nor asked.
    memory.remove("db.ext");
    assert!(matches!(next(&mut w).await, Ok(Event::Delete(_))));
    assert!(r.status().is_empty());
    let asked = dns.queries("db.example.com");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(dns.queries("db.example.com"), asked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_name_is_asked_once_per_ttl_however_many_services_and_streams_name_it() {
    let dns = CountingDns::start().await;
    dns.set("api.example.com", &[ip("10.1.0.1")], 2);
    let r = resolver(&dns);
    let memory = MemoryRegistry::new("memory/a");
    for i in 0..50 {
        memory.insert(named(&format!("s{i}.ext"), "api.example.com"));
    }
    // Five streams (five registries, or one watched five times).
    let mut streams = Vec::new();
    for _ in 0..5 {
        let mut w = r.wrap(memory.clone()).watch();
        let services = next_reset(&mut w).await;
        assert!(services.iter().all(|s| s.endpoints.len() == 2));
        streams.push(w);
    }
    assert_eq!(r.counts().names, 1);
    let start = dns.queries("api.example.com");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let asked = dns.queries("api.example.com") - start;
    // 5 s at a TTL of 2 s: two or three queries (IPv4 answers: no AAAA).
    assert!((1..=3).contains(&asked), "{asked} queries in 5 s");
    drop(streams);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_name_costs_its_service_only_its_endpoints() {
    let dns = CountingDns::start().await;
    dns.silence("slow.example.com");
    dns.set("ok.example.com", &[ip("10.2.0.1")], 30);
    let r = resolver(&dns);
    let memory = MemoryRegistry::new("memory/a");
    memory.insert(named("slow.ext", "slow.example.com"));
    memory.insert(named("ok.ext", "ok.example.com"));
    let mut rr = named("rr.ext", "rr.example.com");
    rr.endpoints.pop();
    rr.resolution = Some(Resolution::DnsRoundRobin);
    memory.insert(rr.clone());
    let mut w = r.wrap(memory.clone()).watch();
    let services = next_reset(&mut w).await;
    let by = |h: &str| {
        services
            .iter()
            .find(|s| s.hostname.as_str() == h)
            .expect("service")
            .clone()
    };
    assert_eq!(addresses(&by("slow.ext")), ["10.9.9.9"]);
    assert_eq!(addresses(&by("ok.ext")), ["10.2.0.1", "10.9.9.9"]);
    // The proxy resolves DNS_ROUND_ROBIN names itself.
    assert_eq!(by("rr.ext"), rr);
    assert_eq!(dns.queries("rr.example.com"), 0);
    let slow = r
        .status()
        .into_iter()
        .find(|n| n.name.as_str() == "slow.example.com")
        .expect("followed");
    assert!(slow.addresses.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_beyond_the_limit_are_refused_and_shown() {
    let dns = CountingDns::start().await;
    dns.set("a.example.com", &[ip("10.3.0.1")], 30);
    dns.set("b.example.com", &[ip("10.3.0.2")], 30);
    let r = Resolver::new(Settings {
        servers: vec![dns.addr()],
        max_names: 1,
        ..Settings::default()
    })
    .expect("resolver");
    let memory = MemoryRegistry::new("memory/a");
    memory.insert(named("a.ext", "a.example.com"));
    memory.insert(named("b.ext", "b.example.com"));
    let mut w = r.wrap(memory.clone()).watch();
    let services = next_reset(&mut w).await;
    let resolved: usize = services.iter().map(|s| s.endpoints.len() - 1).sum();
    assert_eq!(
        resolved,
        1,
        "one name followed: {:?} {:?}",
        r.status(),
        services
    );
    let status = r.status();
    assert_eq!(status.iter().filter(|n| n.refused).count(), 1, "{status:?}");
    assert_eq!(r.counts().names, 1);
}

struct Blip(MemoryRegistry);

impl sextant_testkit::contract::Outage for Blip {
    async fn begin(&mut self) {
        self.0
            .fail(|| sextant_core::Error::unavailable("the source went away"));
    }
    async fn end(&mut self) {
        let services = self.0.services();
        self.0.reset(services);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrapped_registry_keeps_the_registry_contract() {
    let dns = CountingDns::start().await;
    dns.set("db.example.com", &[ip("10.0.0.1")], 30);
    let memory = MemoryRegistry::new("memory/contract");
    memory.insert(named("db.ext", "db.example.com"));
    let wrapped = resolver(&dns).wrap(memory.clone());
    assert_eq!(wrapped.id().as_str(), "memory/contract");
    sextant_testkit::contract::registry_contract(&wrapped, Some(&mut Blip(memory))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_dns_server_holds_back_one_event_not_every_one() {
    let dns = CountingDns::start().await;
    let r = Resolver::new(Settings {
        servers: vec![dns.addr()],
        timeout: Duration::from_secs(10),
        first_wait: Duration::from_secs(3),
        ..Settings::default()
    })
    .expect("resolver");
    let memory = MemoryRegistry::new("memory/a");
    let mut w = r.wrap(memory.clone()).watch();
    assert!(next_reset(&mut w).await.is_empty());
    let started = tokio::time::Instant::now();
    for i in 0..5 {
        let name = format!("silent-{i}.example.com");
        dns.silence(&name);
        memory.insert(named(&format!("s{i}.ext"), &name));
        let s = next_apply(&mut w, &format!("s{i}.ext")).await;
        assert_eq!(addresses(&s), ["10.9.9.9"], "no answer: no address yet");
    }
    // The first was held back for the whole wait; the others were not
    // (before, 5 x 3 s). A bound against a hang, not a timing.
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "{:?}",
        started.elapsed()
    );
}
