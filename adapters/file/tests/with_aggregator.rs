//! The file registry behind the aggregator: what the debug endpoints will show.
#![allow(clippy::expect_used)]

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use sextant_aggregate::{Aggregator, AggregatorConfig, SyncState};
use sextant_core::Registry;
use sextant_file::{FileRegistry, FileRegistryConfig};
use sextant_testkit::events::watch_until;

const GOOD: &str = "services:\n  - hostname: a.svc\n    ports: [{name: http, port: 80}]\n    endpoints: [{address: 10.0.0.1}]\n";

#[tokio::test]
async fn an_invalid_file_keeps_the_view_and_shows_the_error_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    fs::write(&file, GOOD).expect("write");
    let config = FileRegistryConfig {
        debounce: Duration::from_millis(20),
        ..Default::default()
    };
    let registry = FileRegistry::new("file/main", vec![file.clone()], config);
    let (agg, handle) = Aggregator::new(
        AggregatorConfig::default(),
        vec![Arc::new(registry) as Arc<dyn Registry>],
    )
    .expect("agg");
    tokio::spawn(agg.run());
    let view = handle.ready().await.expect("ready");
    assert_eq!(view.endpoint_count(), 1);

    fs::write(
        &file,
        "services:\n  - hostname: a.svc\n    ports: [{name: http, port: 80}\n",
    )
    .expect("write");
    let mut status = handle.status();
    let st = watch_until(&mut status, "the file's error", |s| {
        s.registry("file/main")
            .is_some_and(|r| !r.problems.is_empty())
    })
    .await;
    let reg = st.registry("file/main").expect("registry");
    assert_eq!(
        reg.state,
        SyncState::Synced,
        "a bad file is a problem, not an outage"
    );
    let object = reg.problems[0].object.clone().expect("object");
    assert!(
        object.starts_with(&format!("{}:", file.display())),
        "{object}"
    );
    assert!(object.split(':').count() >= 3, "line and column: {object}");
    assert_eq!(
        handle.view().borrow().generation,
        view.generation,
        "view untouched"
    );
    assert_eq!(handle.view().borrow().endpoint_count(), 1);

    fs::write(&file, GOOD.replace("10.0.0.1", "10.0.0.2")).expect("write");
    let mut rx = handle.view();
    watch_until(&mut rx, "the fixed file", |v| {
        v.generation > view.generation
    })
    .await;
    assert!(
        handle
            .status()
            .borrow()
            .registry("file/main")
            .expect("r")
            .problems
            .is_empty()
    );
}
