//! The Consul double checked with py-consul, an independent client written
//! against the real Consul: if the double drifts from Consul's API, this fails.
#![allow(clippy::expect_used)]

use sextant_testkit::consul::ConsulDouble;
use sextant_testkit::peers::{python_path, workspace_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_consul_registers_queries_and_blocks_against_the_double() {
    let double = ConsulDouble::start().await;
    let script = workspace_root().join("crates/testkit/tests/py_consul_check.py");
    let out = tokio::process::Command::new(python_path())
        .arg(script)
        .arg(double.addr.ip().to_string())
        .arg(double.addr.port().to_string())
        .output()
        .await
        .expect("run python");
    assert!(
        out.status.success(),
        "py-consul failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["services"], serde_json::json!({ "web": ["v1"] }));
    assert_eq!(
        v["initial_status"], "critical",
        "a TTL check starts critical"
    );
    assert_eq!(v["initial_passing"], 0);
    assert_eq!(
        v["service"],
        serde_json::json!({
            "ID": "web-1", "Service": "web", "Address": "10.0.0.1", "Port": 8080,
            "Tags": ["v1"], "Meta": { "protocol": "http" }, "Weights": { "Passing": 3, "Warning": 1 }
        })
    );
    assert_eq!(v["catalog_port"], 8080);
    // Woken by the change (at 0.5 s), not by its 20 s wait: generous bound.
    assert!(v["woke_after_s"].as_f64().expect("f64") < 10.0, "{v}");
    assert_eq!(v["index_grew"], true);
    assert_eq!(v["status_after"], "passing");
    assert_eq!(v["passing_after"], 1);
    let waited = v["timeout_after_s"].as_f64().expect("f64");
    assert!(waited >= 1.0, "returned before its wait: {waited}");
    assert_eq!(v["timeout_same_index"], true);
    assert_eq!(v["services_after_deregister"], serde_json::json!({}));
    assert_eq!(v["config_set"], true);
    assert_eq!(
        v["config_get"],
        serde_json::json!({
            "Kind": "service-splitter", "Name": "web",
            "Splits": [{"Weight": 90, "ServiceSubset": "v1"}, {"Weight": 10, "ServiceSubset": "v2"}]
        })
    );
    assert_eq!(v["config_indexes"], true);
    assert_eq!(v["config_cas_stale"], false, "a stale cas does not write");
    assert_eq!(v["config_cas_current"], true);
    assert_eq!(v["config_list"], serde_json::json!(["web"]));
    assert_eq!(v["config_delete"], true);
    assert_eq!(v["config_list_after"], serde_json::json!([]));
}
