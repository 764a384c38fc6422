//! An embedder's crate outside this repository, as `cargo new` makes it:
//! it depends on `sextant` by path with `default-features = false` and
//! builds with no protoc anywhere (no `PROTOC`, none on `PATH`, and not this
//! repository's `.cargo/config.toml`, which cargo reads only inside it),
//! without etcd-client, kube or k8s-openapi in its tree.
//!
//! The build shares this workspace's target directory and lock file, so it
//! compiles little beyond `sextant` itself with fewer features.
#![allow(clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

#[test]
fn an_embedder_builds_the_core_without_protoc_kube_or_etcd() {
    let root = workspace();
    let dir = tempfile::tempdir().expect("tempdir");
    let krate = dir.path().join("my-registry");
    std::fs::create_dir_all(krate.join("src")).expect("mkdir");
    std::fs::write(
        krate.join("Cargo.toml"),
        format!(
            "[package]\nname = \"my-registry\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [dependencies]\nsextant = {{ path = \"{}\", default-features = false }}\n\
             tokio = {{ version = \"1\", features = [\"rt-multi-thread\", \"macros\"] }}\n\
             anyhow = \"1\"\n",
            root.join("crates/sextant").display()
        ),
    )
    .expect("write manifest");
    std::fs::write(
        krate.join("src/main.rs"),
        "use sextant::Sextant;\nuse sextant::core::MemoryRegistry;\n\n\
         #[tokio::main]\nasync fn main() -> anyhow::Result<()> {\n    \
         let running = Sextant::new()\n        .registry(MemoryRegistry::new(\"memory/main\"))\n        \
         .xds_addr(\"127.0.0.1:0\".parse()?)\n        .admin_addr(None)\n        .start()\n        .await?;\n    \
         running.shutdown().await;\n    Ok(())\n}\n",
    )
    .expect("write main");
    // The workspace's lock file: the same versions, nothing to download.
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
    let (ok, text) = run(&["build", "--offline", "--quiet"]);
    assert!(ok, "the embedder's crate does not build:\n{text}");
}
