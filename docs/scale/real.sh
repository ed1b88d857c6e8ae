#!/usr/bin/env bash
# Real processes on loopback (issue 24, "scale"): for each group size, the `bench` example's
# nodes (one OS process each, QUIC with mutual TLS) run in a network namespace of their
# own, so the namespace's loopback counters hold their traffic and nothing else. Each node
# sends 1 message/s (a nearly idle group); the script samples loopback packets and bytes
# over a window while the group is settled, then the bench kills one node (SIGKILL) and
# reports how long the others took to install a view without it.
#
#   bash docs/scale/real.sh [SIZES...]        (default: 3 5 9 15; needs root for unshare)
#
# Prints one JSON line per size: {"design":"all-members","real_processes":true,"members":N,
# "lo_packets_per_s":..,"lo_bytes_per_s":..,"window_s":..,"bench":{...bench line...}}.
# The window starts WINDOW_START s after the bench starts and lasts WINDOW s; the bench
# sends for SECONDS s and kills its last node KILL_AFTER s after sending starts.
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=${CARGO_TARGET_DIR:-target}
BENCH="$TARGET/release/examples/bench"
[ -x "$BENCH" ] || cargo build --release -p walrus-gcs --example bench
SIZES=${*:-3 5 9 15}
WINDOW_START=${WINDOW_START:-12}
WINDOW=${WINDOW:-10}
SECONDS_SENDING=${SECONDS_SENDING:-30}
KILL_AFTER=${KILL_AFTER:-25}
for n in $SIZES; do
  # Inside a new network namespace: loopback up, bench in the background, two samples.
  unshare -n bash -c '
    set -euo pipefail
    ip link set lo up
    lo() { awk "/^ *lo:/ {print \$2, \$3}" /proc/net/dev; }
    out=$(mktemp)
    "$0" --nodes "$1" --size 100 --rate 1 --seconds "$2" --kill-after "$3" >"$out" 2>/dev/null &
    bench=$!
    sleep "$4"; read -r b0 p0 < <(lo)
    sleep "$5"; read -r b1 p1 < <(lo)
    wait "$bench" || true
    printf "{\"design\":\"all-members\",\"real_processes\":true,\"members\":%s,\"lo_packets_per_s\":%s,\"lo_bytes_per_s\":%s,\"window_s\":%s,\"bench\":%s}\n" \
      "$1" "$(( (p1 - p0) / $5 ))" "$(( (b1 - b0) / $5 ))" "$5" "$(cat "$out" || echo null)"
    rm -f "$out"
  ' "$BENCH" "$n" "$SECONDS_SENDING" "$KILL_AFTER" "$WINDOW_START" "$WINDOW"
done
