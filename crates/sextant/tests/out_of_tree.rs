//! An embedder's crate outside this repository: `examples/http-registry`
//! copied to a temporary directory as a newcomer would copy it, its
//! `sextant` dependency (`default-features = false`) pointed at this
//! repository by absolute path. It builds with no protoc anywhere (no
//! `PROTOC`, none on `PATH`, and not this repository's `.cargo/config.toml`,
//! which cargo reads only inside it), without etcd-client, kube or
//! k8s-openapi in its tree; and with the `etcd` feature on, still without
//! protoc.
//!
//! The build uses this workspace's lock file (the same versions, nothing
//! to download) and a target directory of its own under `target/`. It is
//! `cargo check`: build scripts run (etcd-client's would need protoc) and
//! every crate is type-checked against the copied manifest, which is what
//! this test is about; the example itself is compiled, linked and tested
//! in the workspace. A full build here compiled every dependency a second
//! time (3 of the test suite's minutes on a 2-core machine).
#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

#[test]
fn the_example_adapter_builds_out_of_tree_without_protoc_kube_or_etcd() {
    let root = workspace();
    let dir = tempfile::tempdir().expect("tempdir");
    let krate = dir.path().join("http-registry");
    copy_dir(&root.join("examples/http-registry"), &krate);
    let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).expect("manifest");
    assert!(
        !manifest.contains("workspace = true"),
        "the example inherits from the workspace: it cannot be copied out"
    );
    let manifest = manifest.replace(
        "path = \"../../crates/",
        &format!("path = \"{}/crates/", root.display()),
    );
    std::fs::write(krate.join("Cargo.toml"), manifest).expect("write manifest");
    std::fs::copy(root.join("Cargo.lock"), krate.join("Cargo.lock")).expect("copy lock");

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // A PATH without any protoc: only the directory of cargo and rustc.
    let toolchain = PathBuf::from(&cargo)
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_default();
    let path = format!("{}:/usr/bin:/bin", toolchain.display());
    assert!(
        !std::env::split_paths(&path).any(|d| d.join("protoc").exists()),
        "this test needs a PATH without protoc: {path}"
    );
    let run = |args: &[&str]| {
        let out = Command::new(&cargo)
            .args(args)
            .current_dir(&krate)
            .env_remove("PROTOC")
            // Whatever lints the workspace (the test script runs clippy as
            // the compiler wrapper) has no say over a newcomer's crate.
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .env_remove("CLIPPY_ARGS")
            .env("PATH", &path)
            .env("CARGO_TARGET_DIR", root.join("target/out-of-tree"))
            .output()
            .expect("run cargo");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = run(&["tree", "--offline", "-e", "normal", "--prefix", "none"]);
    assert!(ok, "{text}");
    for absent in [
        "etcd-client",
        "kube ",
        "k8s-openapi",
        "sextant-etcd",
        "sextant-k8s",
        "sextant-consul",
    ] {
        assert!(
            !text.contains(absent),
            "{absent} is in the embedder's tree:\n{text}"
        );
    }
    assert!(
        text.contains("sextant-file"),
        "the file registry comes with it:\n{text}"
    );
    let (ok, text) = run(&["check", "--offline", "--quiet"]);
    assert!(ok, "the copied example does not build:\n{text}");

    // With the etcd registry too: still no protoc (Sextant speaks etcd's
    // API through its own client, not etcd-client's generated one).
    let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).expect("manifest");
    let with_etcd = manifest.replace(
        "default-features = false }",
        "default-features = false, features = [\"etcd\"] }",
    );
    assert_ne!(
        manifest, with_etcd,
        "the sextant dependency line changed shape"
    );
    std::fs::write(krate.join("Cargo.toml"), with_etcd).expect("write manifest");
    let (ok, text) = run(&["tree", "--offline", "-e", "normal", "--prefix", "none"]);
    assert!(ok, "{text}");
    assert!(text.contains("sextant-etcd"), "{text}");
    for absent in ["etcd-client", "prost-build", "protoc"] {
        assert!(
            !text.contains(absent),
            "{absent} is in the tree with etcd:\n{text}"
        );
    }
    let (ok, text) = run(&["check", "--offline", "--quiet"]);
    assert!(
        ok,
        "with the etcd feature, the example does not build:\n{text}"
    );
}
