//! An embedder's crate outside this repository: `examples/http-registry`
//! copied out as a newcomer would copy it, its `sextant` dependency
//! (`default-features = false`) pointed at this repository by absolute
//! path. It builds with no protoc anywhere, without etcd-client, kube or
//! k8s-openapi in its tree; and with the `etcd` feature on, still without
//! protoc. `scripts/out-of-tree.sh` is the check (its comments say how):
//! a cold `cargo check` of the example's own tree, the slowest test, which
//! starts first (.config/nextest.toml).
#![allow(clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_example_adapter_builds_out_of_tree_without_protoc_kube_or_etcd() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root");
    let out = Command::new(root.join("scripts/out-of-tree.sh"))
        .output()
        .expect("run scripts/out-of-tree.sh");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
