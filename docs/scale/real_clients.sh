#!/usr/bin/env bash
# Two-tier with REAL clients (issue 24, "scale"): for each MEMBERSxCLIENTS, the
# `client_scale` example runs the members as OS processes (walrus-gcs nodes with a client
# listener) and the clients as real `tier::Client`s over QUIC with mutual TLS, all in
# one driver process, in a network namespace of its own: nftables counts each member's
# packets and bytes on its member port and on its client listener, and loopback counts
# everything. One JSON line per run (see the example's doc for the fields).
#
#   bash docs/scale/real_clients.sh [MxC ...]   (default: 3x10 5x100 9x300 9x600; 9x1000 did not settle on a shared 2-core machine; root, for unshare and nft)
set -euo pipefail
cd "$(dirname "$0")/../.."
# Always (re)build: a stale binary would measure old code. Cargo's output goes to stderr.
cargo build --release -p walrus-gcs --example client_scale
BIN="${CARGO_TARGET_DIR:-target}/release/examples/client_scale"
IDLE=${IDLE:-10}
for run in ${*:-3x10 5x100 9x300 9x600}; do
  m=${run%x*}
  c=${run#*x}
  unshare -n bash -c '
    set -euo pipefail
    ip link set lo up
    "$0" --members "$1" --clients "$2" --idle-secs "$3" --nft --timeout 400
  ' "$BIN" "$m" "$c" "$IDLE"
done
