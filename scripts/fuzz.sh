#!/usr/bin/env bash
# Runs one fuzz target (fuzz/fuzz_targets/TARGET.rs) for SECONDS with
# cargo-fuzz on the nightly toolchain, starting from its committed seed
# corpus (fuzz/corpus/TARGET). New inputs go to a scratch corpus, so the
# committed seeds stay small; a crash is saved under fuzz/artifacts/TARGET
# and the script fails.
#
#   scripts/fuzz.sh TARGET SECONDS      e.g. scripts/fuzz.sh sotw_request 600
#   scripts/fuzz.sh --list              the targets
#
# Needs: the nightly toolchain (on the project's machines) and cargo-fuzz
# (scripts/install-peers.sh installs it).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--list" ]; then
  ls fuzz/fuzz_targets | grep -v '^common' | sed 's/\.rs$//'
  exit 0
fi
target="${1:?usage: scripts/fuzz.sh TARGET SECONDS (scripts/fuzz.sh --list)}"
seconds="${2:?usage: scripts/fuzz.sh TARGET SECONDS}"
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz is missing: run scripts/install-peers.sh" >&2
  exit 1
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
# No sanitizer: the code forbids unsafe; what fuzzing finds here is panics,
# overflows (debug assertions on), runaway time and memory.
cargo +nightly fuzz run -s none --debug-assertions "$target" \
  "$scratch" "fuzz/corpus/$target" -- \
  -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
