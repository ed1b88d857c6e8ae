#!/bin/bash
# Real processes: three nodes on v1, the file pushed to two (SIGHUP), a fourth node
# started with it, `walrus-node status` on the master meanwhile, then the third reloaded.
# Run from the repository after `cargo build -p walrus-node`; B= names another binary.
# Uses /tmp/ops-demo (the two files name it), loopback ports 15301-15302, 17401-17404,
# 18081-18083 and 19401-19404, python3 (the web servers' stand-ins) and dig. Output as in
# mixed-digest.out beside this script.
set -u
B=$(realpath "${B:-target/debug/walrus-node}")
HERE=$(dirname "$(realpath "$0")")
D=/tmp/ops-demo
mkdir -p $D; cp "$HERE"/v1.toml "$HERE"/v2.toml $D/
cd $D; rm -rf certs dns logs; mkdir -p logs
$B certs init --dir certs >/dev/null
$B certs issue --dir certs n-1 n-2 n-3 n-4 >/dev/null
pids=()
for p in 18081 18082 18083; do python3 -m http.server $p --bind 127.0.0.1 >/dev/null 2>&1 & pids+=($!); done
for n in 1 2 3; do cp v1.toml n-$n.toml; RUST_LOG=walrus_node=info,walrus_actors=info NO_COLOR=1 $B run --config n-$n.toml --node n-$n 2>logs/n-$n.log & pids+=($!); eval "pid$n=$!"; done
sleep 6
M=$(for n in 1 2 3; do $B status --addr 127.0.0.1:1940$n 2>/dev/null | grep -q "(this node)" && echo $n; done | head -1)
echo "master: n-$M"
for n in 1 2 3; do [ $n != $M ] && cp v2.toml n-$n.toml && eval "kill -HUP \$pid$n" && echo "SIGHUP n-$n"; done
cp v2.toml n-4.toml; RUST_LOG=walrus_node=info,walrus_actors=info NO_COLOR=1 $B run --config n-4.toml --node n-4 2>logs/n-4.log & pids+=($!)
sleep 4
echo "=== walrus-node status --addr 127.0.0.1:1940$M (master n-$M, files differ) ==="
$B status --addr 127.0.0.1:1940$M
echo "=== dig www.example.com @a1 ==="; dig @127.0.0.1 -p 15301 www.area-a1.example.com A +short
curl -s 127.0.0.1:1940$M/metrics | grep walrus_config_info
cp v2.toml n-$M.toml; eval "kill -HUP \$pid$M"; echo "SIGHUP n-$M (master)"
sleep 5
echo "=== walrus-node status --addr 127.0.0.1:1940$M (every node runs v2) ==="
$B status --addr 127.0.0.1:1940$M
echo "=== dig www.example.com @a1 ==="; dig @127.0.0.1 -p 15301 www.area-a1.example.com A +short
curl -s 127.0.0.1:1940$M/metrics | grep walrus_config_info
for p in "${pids[@]}"; do kill $p 2>/dev/null; done
wait 2>/dev/null
echo "=== log lines about the reload ==="
grep -h -E "reload|peers|digest|unknown" logs/*.log | sed 's/^[^ ]* //' | head -30
