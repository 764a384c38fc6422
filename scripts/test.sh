#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need,
# checks formatting and lints, and runs every test. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "install test peers (Envoy, grpcio, grpc-js-xds, etcd, kubectl, cargo-fuzz, cargo-deny)"
scripts/install-peers.sh

step "cargo deny (no openssl or aws-lc, accepted licenses, crates.io only)"
cargo deny --locked check bans licenses sources

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

# Every fuzz target briefly, from its seed corpus: a parser that regressed
# shows here. Longer runs: scripts/fuzz.sh TARGET SECONDS.
FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
step "fuzz every target for ${FUZZ_SECONDS} s"
cargo +nightly fuzz build -s none --debug-assertions
for target in $(scripts/fuzz.sh --list); do
  echo "fuzz: $target"
  scripts/fuzz.sh "$target" "$FUZZ_SECONDS" 2>&1 | tail -n 4
done
