//! An embedder's crate outside this repository: `examples/http-registry`
//! copied out as a newcomer would copy it, its `sextant` dependency
//! (`default-features = false`) pointed at this repository by absolute
//! path. It builds with no protoc anywhere, without etcd-client, kube or
//! k8s-openapi in its tree; and with the `etcd` feature on, still without
//! protoc. `scripts/out-of-tree.sh` is the check (its comments say how);
//! scripts/test.sh also starts it early, in the background, so that its
//! cold `cargo check` fills the gaps of the main build rather than running
//! alone at the end, and this test then finds its work done.
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
