#!/usr/bin/env bash
# The full benchmark suite: installs the peers (Debian's mosquitto and nats-server, pymodbus),
# runs pointhub, mosquitto and nats-server on the same workloads, and writes docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v mosquitto >/dev/null || ! command -v nats-server >/dev/null; then
  apt-get update -qq && apt-get install -y -qq mosquitto nats-server >/dev/null
fi
if ! .venv-peers/bin/python -c "import pymodbus" 2>/dev/null; then
  python3 -m venv .venv-peers && .venv-peers/bin/pip install -q 'pymodbus==3.9.2'
fi
cargo bench --bench suite -- --write-docs
cargo bench --bench modbus_poll
