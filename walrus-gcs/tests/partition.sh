#!/usr/bin/env bash
# Partition test of walrus-gcs with real processes in real network namespaces.
#
# Starts N (3-5) `gcs-node` processes, each in its own network namespace joined by a veth
# pair to a bridge that lives in a namespace of its own, waits for one view of all N,
# partitions them with nftables drop rules into {n0..n(k-1)} | {nk..}, waits for two
# views, heals, and waits for one view again. Prints one JSON line with the timings.
# Cleans up every namespace, process and file it made, also on failure or Ctrl-C.
#
# usage: partition.sh EXAMPLES_DIR [NODES]
#   EXAMPLES_DIR holds the built `gcs-node` example (cargo build -p walrus-gcs --examples)
# needs: root, iproute2 (ip netns, veth, bridge), nftables (nft)
set -euo pipefail

EXAMPLES=${1:?usage: partition.sh EXAMPLES_DIR [NODES]}
N=${2:-3}
NODE_BIN="$EXAMPLES/gcs-node"
DEADLINE=${WALRUS_NETNS_DEADLINE:-40}   # seconds for each step

[ "$N" -ge 3 ] && [ "$N" -le 5 ] || { echo "NODES must be 3..5" >&2; exit 2; }
[ -x "$NODE_BIN" ] || { echo "$NODE_BIN missing: cargo build -p walrus-gcs --examples" >&2; exit 2; }
command -v ip >/dev/null || { echo "ip missing: apt-get install iproute2" >&2; exit 2; }
command -v nft >/dev/null || { echo "nft missing: apt-get install nftables" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "must run as root (network namespaces)" >&2; exit 2; }

TAG="wg$$"
BR="$TAG-br"
WORK=$(mktemp -d "/tmp/walrus-netns-XXXXXX")
PIDS=()
NSS=()

cleanup() {
    local rc=$?
    set +e
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    for ns in "${NSS[@]}"; do ip netns del "$ns" 2>/dev/null; done
    if [ $rc -ne 0 ]; then
        echo "partition.sh: FAILED (rc=$rc); node logs:" >&2
        for f in "$WORK"/n*.log "$WORK"/n*.err; do
            [ -f "$f" ] && { echo "== $f" >&2; tail -n 20 "$f" >&2; }
        done
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

addr() { echo "10.77.0.$((10 + $1))"; }
names=(); for i in $(seq 0 $((N - 1))); do names+=("n$i"); done

# Network: a bridge in its own namespace, one namespace per node.
ip netns add "$BR"; NSS+=("$BR")
ip -n "$BR" link set lo up
ip -n "$BR" link add br0 type bridge
ip -n "$BR" link set br0 up
for i in "${!names[@]}"; do
    ns="$TAG-${names[$i]}"
    ip netns add "$ns"; NSS+=("$ns")
    ip -n "$ns" link set lo up
    ip link add "eth0" netns "$ns" type veth peer name "p$i" netns "$BR"
    ip -n "$BR" link set "p$i" master br0 up
    ip -n "$ns" addr add "$(addr "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
done

# Certificates: one CA, one certificate per node.
"$EXAMPLES/certs" init "$WORK/certs" >/dev/null
"$EXAMPLES/certs" issue "$WORK/certs" "${names[@]}" >/dev/null

# Nodes.
for i in "${!names[@]}"; do
    args=(--name "${names[$i]}" --listen "$(addr "$i"):7000" --certs "$WORK/certs")
    for j in "${!names[@]}"; do
        [ "$i" = "$j" ] || args+=(--peer "${names[$j]}=$(addr "$j"):7000")
    done
    ip netns exec "$TAG-${names[$i]}" "$NODE_BIN" "${args[@]}" \
        >"$WORK/${names[$i]}.log" 2>"$WORK/${names[$i]}.err" &
    PIDS+=($!)
done

# members_json n0 n1 ... -> ["n0","n1",...]
members_json() { local out="" m; for m in "$@"; do out="$out,\"$m\""; done; echo "[${out#,}]"; }

# last_view NODE: the members of the last view NODE printed.
last_view() {
    grep '"event":"view"' "$WORK/$1.log" 2>/dev/null | tail -n 1 | sed -n 's/.*"members":\(\[[^]]*\]\).*/\1/p'
}

# wait_views "n0 n1" "n2": every node's last view is its own component.
wait_views() {
    local start=$SECONDS comp node ok
    while :; do
        ok=1
        for comp in "$@"; do
            # shellcheck disable=SC2086
            want=$(members_json $comp)
            for node in $comp; do
                [ "$(last_view "$node")" = "$want" ] || ok=0
            done
        done
        [ $ok = 1 ] && break
        if [ $((SECONDS - start)) -ge "$DEADLINE" ]; then
            echo "timed out waiting for views: $*" >&2
            for node in "${names[@]}"; do echo "  $node: $(last_view "$node")" >&2; done
            return 1
        fi
        for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || { echo "a node died" >&2; return 1; }; done
        sleep 0.05
    done
}

now_ms() { date +%s%3N; }

t0=$(now_ms)
wait_views "${names[*]}"
t_form=$(( $(now_ms) - t0 ))

# Partition: the first half against the rest (2|3 for five nodes, 1|2 for three).
k=$((N / 2))
left=("${names[@]:0:$k}"); right=("${names[@]:$k}")
block() { # block NODE_INDEX OTHER_INDEXES...: drop traffic between them, in NODE's namespace
    local i=$1; shift
    local set="" j
    for j in "$@"; do set="$set, $(addr "$j")"; done
    cat >"$WORK/nft-$i" <<NFT
table inet walrus_partition {
    chain input { type filter hook input priority 0; ip saddr { ${set#, } } drop; }
    chain output { type filter hook output priority 0; ip daddr { ${set#, } } drop; }
}
NFT
    ip netns exec "$TAG-${names[$i]}" nft -f "$WORK/nft-$i"
}
for i in "${!names[@]}"; do
    if [ "$i" -lt "$k" ]; then
        # shellcheck disable=SC2046
        block "$i" $(seq "$k" $((N - 1)))
    else
        # shellcheck disable=SC2046
        block "$i" $(seq 0 $((k - 1)))
    fi
done
t1=$(now_ms)
wait_views "${left[*]}" "${right[*]}"
t_split=$(( $(now_ms) - t1 ))

# Heal.
for i in "${!names[@]}"; do
    ip netns exec "$TAG-${names[$i]}" nft delete table inet walrus_partition
done
t2=$(now_ms)
wait_views "${names[*]}"
t_merge=$(( $(now_ms) - t2 ))

echo "{\"nodes\":$N,\"form_ms\":$t_form,\"split_ms\":$t_split,\"merge_ms\":$t_merge}"
