//! The file registry against the real file system and inotify. Timeouts
//! here only keep a broken build from hanging; nothing is timed.
#![allow(clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::time::Duration;

use sextant_core::{Error, Event, Registry, Service};
use sextant_file::{FileRegistry, FileRegistryConfig};
use sextant_testkit::events::{next, next_apply, next_reset};
use sextant_testkit::fixtures;

fn doc(hostname: &str, ips: &[&str]) -> String {
    let mut s = format!(
        "services:\n  - hostname: {hostname}\n    ports: [{{name: http, port: 80}}]\n    endpoints:\n"
    );
    for ip in ips {
        s.push_str(&format!("      - address: {ip}\n"));
    }
    s
}

fn registry(paths: &[&Path]) -> FileRegistry {
    let config = FileRegistryConfig {
        debounce: Duration::from_millis(20),
        ..Default::default()
    };
    FileRegistry::new(
        "file/test",
        paths.iter().map(|p| p.to_path_buf()).collect(),
        config,
    )
}

fn addresses(services: &[Service]) -> Vec<String> {
    services
        .iter()
        .flat_map(|s| s.endpoints.iter().map(|e| e.address.to_string()))
        .collect()
}

/// Writes like an editor that saves through a temporary file and a rename.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("x")
    ));
    fs::write(&tmp, text).expect("write tmp");
    fs::rename(&tmp, path).expect("rename");
}

#[tokio::test]
async fn edits_in_place_and_by_rename_are_picked_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    fs::write(&file, doc("a.svc", &["10.0.0.1"])).expect("write");
    let mut w = registry(&[&file]).watch();
    assert_eq!(addresses(&next_reset(&mut w).await), ["10.0.0.1"]);

    // After the first read, what changed: the service, applied whole.
    fs::write(&file, doc("a.svc", &["10.0.0.1", "10.0.0.2"])).expect("write");
    let a = next_apply(&mut w, "a.svc").await;
    assert_eq!(addresses(&[a]), ["10.0.0.1", "10.0.0.2"]);

    write_atomically(&file, &doc("a.svc", &["10.0.0.3"]));
    let a = next_apply(&mut w, "a.svc").await;
    assert_eq!(addresses(&[a]), ["10.0.0.3"]);
}

#[tokio::test]
async fn an_invalid_edit_keeps_the_last_good_services_and_reports_where() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    fs::write(&file, doc("a.svc", &["10.0.0.1"])).expect("write");
    let mut w = registry(&[&file]).watch();
    next_reset(&mut w).await;

    // The last good content stays: nothing about the service is sent, only
    // the problem.
    fs::write(
        &file,
        doc("a.svc", &["10.0.0.1"]).replace("port: 80", "port: 0"),
    )
    .expect("write");
    let object = match next(&mut w).await {
        Err(Error::InvalidObject { object, reason }) => {
            assert_eq!(object, format!("{}:2", file.display()));
            assert!(reason.contains("field ports[0].port: port 0"), "{reason}");
            object
        }
        other => panic!("expected an invalid-object error, got {other:?}"),
    };

    // Fixed: the new service, and the problem retracted by name.
    fs::write(&file, doc("a.svc", &["10.0.0.9"])).expect("write");
    let a = next_apply(&mut w, "a.svc").await;
    assert_eq!(addresses(&[a]), ["10.0.0.9"]);
    match next(&mut w).await {
        Ok(Event::Resolved(o)) => assert_eq!(o, object),
        other => panic!("expected the problem retracted, got {other:?}"),
    }
}

#[tokio::test]
async fn directory_files_come_and_go() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("a.yaml"), doc("a.svc", &["10.0.0.1"])).expect("write");
    let mut w = registry(&[dir.path()]).watch();
    assert_eq!(next_reset(&mut w).await.len(), 1);

    write_atomically(&dir.path().join("b.yaml"), &doc("b.svc", &["10.0.0.2"]));
    match next(&mut w).await {
        Ok(Event::Apply(s)) => assert_eq!(s.hostname.as_str(), "b.svc"),
        other => panic!("{other:?}"),
    }

    fs::remove_file(dir.path().join("a.yaml")).expect("rm");
    match next(&mut w).await {
        Ok(Event::Delete(h)) => assert_eq!(h.as_str(), "a.svc"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_ten_thousand_endpoint_file_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("big.yaml");
    let mesh = fixtures::mesh(100, 100);
    fs::write(&file, fixtures::registry_yaml(&mesh)).expect("write");
    let mut w = registry(&[&file]).watch();
    let services = next_reset(&mut w).await;
    assert_eq!(
        services.iter().map(|s| s.endpoints.len()).sum::<usize>(),
        10_000
    );
    assert_eq!(services, mesh);
}

#[tokio::test]
async fn touching_a_file_without_changing_it_sends_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    let text = doc("a.svc", &["10.0.0.1"]);
    fs::write(&file, &text).expect("write");
    let mut w = registry(&[&file]).watch();
    next_reset(&mut w).await;
    fs::write(&file, &text).expect("rewrite");
    fs::write(dir.path().join("unrelated.txt"), "x").expect("write");
    // Then a real change: it must be the very next event.
    tokio::time::sleep(Duration::from_millis(200)).await;
    fs::write(&file, doc("a.svc", &["10.0.0.2"])).expect("write");
    match next(&mut w).await {
        Ok(Event::Apply(a)) => assert_eq!(addresses(&[a]), ["10.0.0.2"]),
        other => panic!("{other:?}"),
    }
}

/// The registry contract every adapter runs (a local file cannot go away:
/// an unreadable one keeps its content, see the load tests).
#[tokio::test]
async fn keeps_the_registry_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.yaml");
    fs::write(&a, doc("a.svc", &["10.0.0.1"])).expect("write");
    let r = registry(&[&a]);
    sextant_testkit::contract::registry_contract(
        &r,
        None::<&mut sextant_testkit::contract::NoOutage>,
    )
    .await;
    sextant_testkit::contract::rule_source_contract(
        &r,
        None::<&mut sextant_testkit::contract::NoOutage>,
    )
    .await;

    // A second file that does not validate, then fixed: its problem alone
    // is retracted.
    struct BadFile(std::path::PathBuf);
    impl sextant_testkit::contract::Problem for BadFile {
        async fn spoil(&mut self) {
            fs::write(
                &self.0,
                doc("b.svc", &["10.0.0.2"]).replace("port: 80", "port: 0"),
            )
            .expect("write");
        }
        async fn mend(&mut self) {
            fs::write(&self.0, doc("b.svc", &["10.0.0.2"])).expect("write");
        }
    }
    let r = registry(&[dir.path()]);
    sextant_testkit::contract::problems_contract(
        "file",
        r.watch(),
        &mut BadFile(dir.path().join("b.yaml")),
    )
    .await;
}

/// A mounted ConfigMap is updated by Kubernetes' atomic writer: a new
/// timestamped directory, then the `..data` link swapped by a rename. No
/// event names the registry file itself, and the change is picked up.
#[tokio::test]
async fn a_configmap_style_link_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    fs::create_dir(d.join("..2026_12_07_01")).expect("mkdir");
    fs::write(
        d.join("..2026_12_07_01/mesh.yaml"),
        doc("a.svc", &["10.0.0.1"]),
    )
    .expect("write");
    symlink("..2026_12_07_01", d.join("..data")).expect("link");
    symlink("..data/mesh.yaml", d.join("mesh.yaml")).expect("link");
    let mut w = registry(&[&d.join("mesh.yaml")]).watch();
    assert_eq!(addresses(&next_reset(&mut w).await), ["10.0.0.1"]);

    fs::create_dir(d.join("..2026_12_07_02")).expect("mkdir");
    fs::write(
        d.join("..2026_12_07_02/mesh.yaml"),
        doc("a.svc", &["10.0.0.2"]),
    )
    .expect("write");
    symlink("..2026_12_07_02", d.join("..data_tmp")).expect("link");
    fs::rename(d.join("..data_tmp"), d.join("..data")).expect("swap");
    let a = next_apply(&mut w, "a.svc").await;
    assert_eq!(addresses(&[a]), ["10.0.0.2"]);
}

/// Another file of the directory written all the time (a log beside the
/// registry file) wakes nothing, and neither does reading the registry
/// file: the watcher signals only for writes to the registry's own files.
/// (Before, it signalled on every event of the directory, reads included:
/// the registry's two watches, services and rules, read the same file and
/// woke each other in turn, so the debounce seldom saw quiet and held
/// about every other change back by its cap, 2 s.)
#[tokio::test]
async fn writes_to_other_files_of_the_directory_wake_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("mesh.yaml");
    fs::write(&file, doc("a.svc", &["10.0.0.1"])).expect("write");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _watcher = sextant_file::start_watcher(std::slice::from_ref(&file), tx).expect("watcher");
    for i in 0..20 {
        fs::write(dir.path().join("sextant.log"), format!("line {i}\n")).expect("log");
        fs::write(dir.path().join(".mesh.yaml.swp"), "x").expect("swap");
        fs::read(&file).expect("read");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        rx.try_recv().is_err(),
        "a write to another file woke the registry"
    );
    fs::write(&file, doc("a.svc", &["10.0.0.2"])).expect("write");
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the registry file's own write wakes it")
        .expect("signal");
}
