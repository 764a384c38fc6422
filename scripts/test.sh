#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need,
# checks formatting, lints and the dependency policy, runs every test, and
# runs every fuzz target briefly. `.ci/run` calls this. Each step's time is
# printed at the end (also when a step fails).
#
# Where the time goes on a fresh clone (2 cores) is compiling the
# dependencies, so each is compiled once where it can be:
# - clippy lints the workspace's own crates while they compile for the
#   tests (clippy-driver as cargo's RUSTC_WORKSPACE_WRAPPER, which is what
#   `cargo clippy` does, minus the second pass over every dependency in
#   check mode that a separate `cargo clippy` costs);
# - the tests run with cargo-nextest, several test binaries at a time (they
#   mostly wait on real peers: Envoy, etcd, the doubles);
# - the fuzz build (nightly, instrumented, its own workspace and target
#   directory) optimises at level 1, which runs as fast as level 3 here
#   and compiles in less than half the time (fuzz/Cargo.toml has the
#   figures); it runs at the lowest CPU priority while the tests run, which
#   mostly wait on their peers, so it takes the cycles they leave idle and
#   never theirs; the slowest tests start first (.config/nextest.toml).
#
# Measured on a fresh clone (2 cores): the main build and the fuzz build
# each cost about 400-500 CPU-seconds, the out-of-tree check of the example
# adapter about 105 (235 before jemalloc and the agent left an embedder's
# tree), the tests about 150 and the fuzz runs about 45, so the
# run is bound by the CPU, not by waiting; starting the out-of-tree check
# beside the main build made the whole run longer (the fuzz build then ran
# alone at the end), and so did starting the fuzz build there, even at the
# lowest priority (the main build took 589 s instead of 321 s).
set -euo pipefail
cd "$(dirname "$0")/.."

STEP=""
STEP_START=0
TIMES=()
RUN_START=$(date +%s)
end_step() {
  if [ -n "$STEP" ]; then
    TIMES+=("$(printf '%5d s  %s' $(( $(date +%s) - STEP_START )) "$STEP")")
  fi
  STEP=""
}
step() {
  end_step
  STEP="$*"
  STEP_START=$(date +%s)
  printf '\n==> %s\n' "$STEP"
}
summary() {
  local status=$?
  # A background build left behind by a failed step goes with the script.
  if [ -n "${FUZZ_BUILD:-}" ]; then kill -- "-$FUZZ_BUILD" 2>/dev/null || true; fi
  end_step
  printf '\n==> step times\n'
  printf '%s\n' "${TIMES[@]}"
  printf '%5d s  in all (exit %d)\n' $(( $(date +%s) - RUN_START )) "$status"
}
trap summary EXIT

step "install test peers (Envoy, grpcio, grpc-js-xds, etcd, kubectl, chromium, cargo-fuzz, cargo-deny, cargo-nextest)"
scripts/install-peers.sh

step "cargo deny (no openssl or aws-lc, accepted licenses, crates.io only)"
cargo deny --locked check bans licenses sources

step "cargo fmt --check"
cargo fmt --all -- --check

# Clippy on the workspace's crates as they are compiled for the tests:
# dependencies are compiled once, not once more in check mode. Warnings are
# errors. The same environment for every cargo call below, so nothing is
# compiled twice.
# CI builds from a fresh clone once: incremental compilation's bookkeeping
# (dependency graphs and query caches for every workspace crate and test
# target) is work no later build reads there. Locally it stays on, so a
# warm run rebuilds only what changed.
# And no debug information in the test build there: a failing test still
# names its file and line (panic locations are compiled in), backtraces
# then name functions only; line tables cost every crate's code generation
# and every test binary's link.
if [ "${CI:-}" = "true" ]; then
  export CARGO_INCREMENTAL=0
  export CARGO_PROFILE_DEV_DEBUG=0
fi
RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver)"
CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
export RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS

step "build every target, with clippy (warnings are errors)"
cargo test --workspace --all-targets --locked --no-run

# The fuzz build, in the background at the lowest priority (see above).
FUZZ_LOG="$(mktemp)"
(
  unset RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS
  exec setsid nice -n 19 scripts/fuzz.sh --build
) >"$FUZZ_LOG" 2>&1 &
FUZZ_BUILD=$!

# Test binaries run several at a time; each test in its own process.
TEST_THREADS="${TEST_THREADS:-4}"
step "cargo nextest run (${TEST_THREADS} at a time; the fuzz build beside it)"
cargo nextest run --workspace --locked --no-fail-fast --test-threads "$TEST_THREADS"

step "doc tests"
cargo test --workspace --locked --doc

unset RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS

# Every fuzz target briefly, from its seed corpus: a parser that regressed
# shows here. Longer runs: scripts/fuzz.sh TARGET SECONDS.
# 3 s each: some 150,000 inputs per target, enough for the seeds'
# regressions (they run first, in well under a second) and a first look
# around them; longer runs are scripts/fuzz.sh's job. The CPU, not the
# clock, bounds this run (see above).
FUZZ_SECONDS="${FUZZ_SECONDS:-3}"
step "fuzz build (optimisation level 1, debug assertions): what is left of it"
if ! wait "$FUZZ_BUILD"; then
  FUZZ_BUILD=""
  cat "$FUZZ_LOG"
  echo "the fuzz build failed" >&2
  exit 1
fi
FUZZ_BUILD=""
tail -n 1 "$FUZZ_LOG"
step "fuzz every target for ${FUZZ_SECONDS} s, two at a time"
scripts/fuzz.sh --all "$FUZZ_SECONDS"
