#!/usr/bin/env bash
# Corosync CPG as a benchmark peer for walrus-gcs, measured in the same run on the same
# machine (see ../shared/FACTS.md "Corosync as a benchmark peer").
#
# Sets up NODES Corosync nodes (udpu, no crypto), one per network namespace joined by veth
# pairs to a bridge in a namespace of its own; runs our CPG sender (bench/cpgsend.c, AGREED,
# every node sending at full speed or at RATE msgs/s) in each; prints one JSON line with
# the same fields as `cargo run --release -p walrus-gcs --example bench`. With --walrus
# BENCH_BINARY it then runs that benchmark with the same arguments, prints its line, and a
# last line with the ratio walrus/corosync — only if the walrus run is valid (its line says
# "valid":true); an invalid run is printed, no ratio is computed and the script exits 1.
#
# usage: bench/corosync.sh [--nodes 3] [--size 1024] [--seconds 10] [--rate 0] [--walrus PATH]
#                          [--walrus-args "--max-pending 128"]
# needs: root, corosync libcpg-dev libqb-dev (Debian), iproute2, a C compiler
set -euo pipefail

NODES=3 SIZE=1024 SECONDS_=10 RATE=0 WALRUS="" WALRUS_ARGS=""
while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) NODES=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --seconds) SECONDS_=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --walrus) WALRUS=$2; shift 2 ;;
        --walrus-args) WALRUS_ARGS=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
done
for t in corosync ip cc; do
    command -v $t >/dev/null || { echo "$t missing: apt-get install corosync libcpg-dev libqb-dev iproute2 gcc" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "must run as root (network namespaces)" >&2; exit 2; }

HERE=$(cd "$(dirname "$0")" && pwd)
TAG="cs$$"
WORK=$(mktemp -d /tmp/walrus-corosync-XXXXXX)
PIDS=()
NSS=()
cleanup() {
    local rc=$?
    set +e
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null; done
    [ $rc -ne 0 ] && for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "== $f" >&2; tail -n 15 "$f" >&2; }; done
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cc -O2 -o "$WORK/cpgsend" "$HERE/cpgsend.c" -lcpg -lqb -lpthread

addr() { echo "10.78.0.$((10 + $1))"; }
ip netns add "$TAG-br"; NSS+=("$TAG-br")
ip -n "$TAG-br" link set lo up
ip -n "$TAG-br" link add br0 type bridge
ip -n "$TAG-br" link set br0 up
nodelist=""
for i in $(seq 0 $((NODES - 1))); do
    ns="$TAG-c$i"
    ip netns add "$ns"; NSS+=("$ns")
    ip -n "$ns" link set lo up
    ip link add eth0 netns "$ns" type veth peer name "p$i" netns "$TAG-br"
    ip -n "$TAG-br" link set "p$i" master br0 up
    ip -n "$ns" addr add "$(addr "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    nodelist="$nodelist    node {
        ring0_addr: $(addr "$i")
        nodeid: $((i + 1))
        name: c$i
    }
"
done
for i in $(seq 0 $((NODES - 1))); do
    mkdir -p "$WORK/state$i"
    cat >"$WORK/corosync$i.conf" <<CONF
totem {
    version: 2
    cluster_name: walrusbench
    transport: udpu
    crypto_cipher: none
    crypto_hash: none
}
nodelist {
$nodelist}
quorum {
    provider: corosync_votequorum
}
logging {
    to_stderr: yes
    to_logfile: no
    to_syslog: no
}
system {
    state_dir: $WORK/state$i
}
CONF
    # Corosync's pid file is fixed under /run: give each its own /run.
    ip netns exec "$TAG-c$i" unshare -m --propagation private \
        sh -c "mount -t tmpfs tmpfs /run && exec corosync -f -c $WORK/corosync$i.conf" \
        >"$WORK/corosync$i.log" 2>&1 &
    PIDS+=($!)
done

# The senders wait until all NODES are in the CPG group, then send for SECONDS.
SENDERS=()
for i in $(seq 0 $((NODES - 1))); do
    ip netns exec "$TAG-c$i" "$WORK/cpgsend" "$SIZE" "$SECONDS_" "$NODES" "$RATE" >"$WORK/out$i" 2>"$WORK/cpgsend$i.log" &
    SENDERS+=($!)
    PIDS+=($!)
done
for pid in "${SENDERS[@]}"; do wait "$pid"; done

# Same aggregation as the walrus bench: mean of per-node delivered/s, median of the
# per-node medians, largest per-node p99.
field() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" "$2"; }
rates="" p50s="" p99s=""
for i in $(seq 0 $((NODES - 1))); do
    d=$(field delivered "$WORK/out$i"); s=$(field secs "$WORK/out$i")
    rates="$rates $(awk -v d="$d" -v s="$s" 'BEGIN { printf "%f", d / s }')"
    p50s="$p50s $(field p50_us "$WORK/out$i")"
    p99s="$p99s $(field p99_us "$WORK/out$i")"
done
mps=$(echo "$rates" | awk '{ t = 0; for (i = 1; i <= NF; i++) t += $i; printf "%.0f", t / NF }')
p50=$(echo "$p50s" | tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int(NR / 2) + 1] }')
p99=$(echo "$p99s" | tr ' ' '\n' | grep . | sort -n | tail -n 1)
mbps=$(awk -v m="$mps" -v s="$SIZE" 'BEGIN { printf "%.2f", m * s / 1e6 }')
rate_field=""
[ "$RATE" != 0 ] && rate_field=",\"rate_per_node\":$RATE"
CORO="{\"system\":\"corosync\",\"nodes\":$NODES,\"size\":$SIZE,\"msgs_per_sec\":$mps,\"mb_per_sec\":$mbps,\"p50_us\":$p50,\"p99_us\":$p99$rate_field}"
echo "$CORO"

# Stop corosync before measuring walrus, so the two never share the CPUs (stderr
# silenced: bash reports the killed jobs).
exec 3>&2 2>/dev/null
for pid in "${PIDS[@]}"; do kill -9 "$pid" || true; done
for pid in "${PIDS[@]}"; do wait "$pid" || true; done
exec 2>&3 3>&-
PIDS=()

if [ -n "$WALRUS" ]; then
    # The walrus benchmark exits 1 with "valid":false when its group broke (a member
    # disconnected, left the view or lost messages): print its line, compute no ratio.
    wrc=0
    # shellcheck disable=SC2086
    W=$("$WALRUS" --nodes "$NODES" --size "$SIZE" --seconds "$SECONDS_" --rate "$RATE" $WALRUS_ARGS | tail -n 1) || wrc=$?
    echo "$W" | sed 's/^{/{"system":"walrus-gcs",/'
    if [ "$wrc" -ne 0 ] || ! echo "$W" | grep -q '"valid":true'; then
        echo "walrus-gcs run invalid (exit $wrc): no ratio computed" >&2
        exit 1
    fi
    wm=$(echo "$W" | sed -n 's/.*"msgs_per_sec":\([0-9.]*\).*/\1/p')
    awk -v w="$wm" -v c="$mps" 'BEGIN { printf "{\"ratio_msgs_per_sec\":%.3f}\n", (c > 0 ? w / c : 0) }'
fi
