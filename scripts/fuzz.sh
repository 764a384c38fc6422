#!/usr/bin/env bash
# Runs one fuzz target (fuzz/fuzz_targets/TARGET.rs) for SECONDS with
# cargo-fuzz on the nightly toolchain, starting from its committed seed
# corpus (fuzz/corpus/TARGET). New inputs go to a scratch corpus, so the
# committed seeds stay small; a crash is saved under fuzz/artifacts/TARGET
# and the script fails.
#
#   scripts/fuzz.sh TARGET SECONDS      e.g. scripts/fuzz.sh sotw_request 600
#   scripts/fuzz.sh --list              the targets
#   scripts/fuzz.sh --build             build every target
#   scripts/fuzz.sh --all SECONDS       every target for SECONDS, two at a time
#                                       (the test script's smoke run)
#
# Builds are release builds at optimisation level 1 with debug assertions
# on: they compile in less than half the time of level 3 and run as fast
# (fuzz/Cargo.toml says how that was measured).
#
# Needs: the nightly toolchain (on the project's machines) and cargo-fuzz
# (scripts/install-peers.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

targets() {
  ls fuzz/fuzz_targets | grep -v '^common' | sed 's/\.rs$//'
}
if [ "${1:-}" = "--list" ]; then
  targets
  exit 0
fi
# No sanitizer: the code forbids unsafe; what fuzzing finds here is panics,
# overflows (debug assertions on), runaway time and memory.
FLAGS=(-s none --debug-assertions)
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz is missing: run scripts/install-peers.sh" >&2
  exit 1
fi
if [ "${1:-}" = "--build" ]; then
  exec cargo +nightly fuzz build "${FLAGS[@]}"
fi
if [ "${1:-}" = "--all" ]; then
  seconds="${2:?usage: scripts/fuzz.sh --all SECONDS}"
  logs="$(mktemp -d)"
  trap 'rm -rf "$logs"' EXIT
  failed=()
  # Two at a time (one per core): each run is one process.
  mapfile -t all < <(targets)
  for ((i = 0; i < ${#all[@]}; i += 2)); do
    pids=()
    for t in "${all[@]:i:2}"; do
      "$0" "$t" "$seconds" >"$logs/$t" 2>&1 &
      pids+=("$!:$t")
    done
    for p in "${pids[@]}"; do
      if ! wait "${p%%:*}"; then failed+=("${p#*:}"); fi
      echo "fuzz: ${p#*:}"
      tail -n 4 "$logs/${p#*:}"
    done
  done
  if [ ${#failed[@]} -gt 0 ]; then
    for t in "${failed[@]}"; do
      echo "fuzz: $t FAILED; its output:" >&2
      tail -n 60 "$logs/$t" >&2
    done
    exit 1
  fi
  exit 0
fi
target="${1:?usage: scripts/fuzz.sh TARGET SECONDS (scripts/fuzz.sh --list)}"
seconds="${2:?usage: scripts/fuzz.sh TARGET SECONDS}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cargo +nightly fuzz run "${FLAGS[@]}" "$target" \
  "$scratch" "fuzz/corpus/$target" -- \
  -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
