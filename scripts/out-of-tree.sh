#!/usr/bin/env bash
# An embedder's crate outside this repository: examples/http-registry
# copied out as a newcomer would copy it, its `sextant` dependency
# (`default-features = false`) pointed at this repository by absolute path.
# It must build with no protoc anywhere (no PROTOC, none on PATH, and not
# this repository's .cargo/config.toml, which cargo reads only inside it),
# without etcd-client, kube, k8s-openapi or OpenTelemetry in its tree; and with the `etcd`
# feature on, still without protoc.
#
# `cargo check` with this workspace's lock file (the same versions, nothing
# to download) into target/out-of-tree: build scripts run (etcd-client's
# would need protoc) and every crate is type-checked against the copied
# manifest; the example itself is compiled, linked and tested in the
# workspace. The copy lives at a fixed place outside the repository (inside
# it, cargo would take it for a workspace member and read the repository's
# .cargo/config.toml), one per checkout, so that a second run finds
# everything checked; runs take turns through a lock. The test
# `out_of_tree.rs` runs this.
#
# Exit status 0 when all holds; otherwise what failed is printed.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TARGET="$ROOT/target/out-of-tree"
mkdir -p "$TARGET"
exec 9>"$TARGET/.lock"
flock 9

KRATE="${TMPDIR:-/tmp}/sextant-out-of-tree-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)/http-registry"
mkdir -p "$(dirname "$KRATE")"
rm -rf "$KRATE"
cp -r "$ROOT/examples/http-registry" "$KRATE"
if grep -q "workspace = true" "$KRATE/Cargo.toml"; then
  echo "the example inherits from the workspace: it cannot be copied out" >&2
  exit 1
fi
sed -i "s|path = \"../../crates/|path = \"$ROOT/crates/|" "$KRATE/Cargo.toml"
cp "$ROOT/Cargo.lock" "$KRATE/Cargo.lock"

CARGO="${CARGO:-$(command -v cargo)}"
# A PATH without any protoc: only the directory of cargo and the system's.
SAFE_PATH="$(dirname "$CARGO"):/usr/bin:/bin"
for d in ${SAFE_PATH//:/ }; do
  if [ -e "$d/protoc" ]; then
    echo "this check needs a PATH without protoc: $d/protoc exists" >&2
    exit 1
  fi
done
run() {
  # Whatever lints the workspace (scripts/test.sh runs clippy as the
  # compiler wrapper) has no say over a newcomer's crate.
  (cd "$KRATE" && env -u PROTOC -u RUSTC_WORKSPACE_WRAPPER -u CLIPPY_ARGS \
    PATH="$SAFE_PATH" CARGO_TARGET_DIR="$TARGET" "$CARGO" "$@")
}

tree="$(run tree --offline -e normal --prefix none)"
for absent in "etcd-client" "kube " "k8s-openapi" "sextant-etcd" "sextant-k8s" "sextant-consul" "tikv-jemalloc-sys" "sextant-agent" "opentelemetry"; do
  if grep -qF "$absent" <<<"$tree"; then
    echo "$absent is in the embedder's tree:" >&2
    echo "$tree" >&2
    exit 1
  fi
done
if ! grep -qF "sextant-file" <<<"$tree"; then
  echo "the file registry does not come with sextant:" >&2
  echo "$tree" >&2
  exit 1
fi
if ! out="$(run check --offline --quiet 2>&1)"; then
  echo "the copied example does not build:" >&2
  echo "$out" >&2
  exit 1
fi

# With the etcd registry too: still no protoc (Sextant speaks etcd's API
# through its own client, not etcd-client's generated one).
before="$(cat "$KRATE/Cargo.toml")"
sed -i 's|default-features = false }|default-features = false, features = ["etcd"] }|' "$KRATE/Cargo.toml"
if [ "$before" = "$(cat "$KRATE/Cargo.toml")" ]; then
  echo "the sextant dependency line changed shape: the etcd feature was not added" >&2
  exit 1
fi
tree="$(run tree --offline -e normal --prefix none)"
if ! grep -qF "sextant-etcd" <<<"$tree"; then
  echo "the etcd feature brought no sextant-etcd:" >&2
  echo "$tree" >&2
  exit 1
fi
for absent in "etcd-client" "prost-build" "protoc"; do
  if grep -qF "$absent" <<<"$tree"; then
    echo "$absent is in the tree with etcd:" >&2
    echo "$tree" >&2
    exit 1
  fi
done
if ! out="$(run check --offline --quiet 2>&1)"; then
  echo "with the etcd feature, the example does not build:" >&2
  echo "$out" >&2
  exit 1
fi
echo "the example builds out of tree, without protoc, kube or etcd-client (and with etcd, still without protoc)"
