//! The crate's arrows point one way: what translates (snapshots, the
//! publisher, translation, resources, metrics, bootstraps) never imports
//! what serves (`server`). The server owns its caches and state; a
//! snapshot carries only what translation produced. Checked on the source
//! text, so that a new import cannot slip in unnoticed.
#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn translation_never_imports_the_server() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let serving = src.join("server");
    let translation: Vec<&PathBuf> = files
        .iter()
        .filter(|p| !p.starts_with(&serving) && !p.ends_with("lib.rs"))
        .collect();
    assert!(
        translation.iter().any(|p| p.ends_with("snapshot.rs"))
            && translation.iter().any(|p| p.ends_with("publisher.rs")),
        "the files to check were not found: {translation:?}"
    );
    let mut offenders = Vec::new();
    for path in translation {
        let text = std::fs::read_to_string(path).expect("read");
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("crate::server") || code.contains("super::server") {
                offenders.push(format!("{}:{}: {}", path.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "translation imports the server:\n{}",
        offenders.join("\n")
    );
}
