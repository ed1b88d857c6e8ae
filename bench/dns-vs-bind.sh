#!/usr/bin/env bash
# The embedded name server vs BIND 9 under dnsperf (issue 15, "Must show" 4).
#
# One configuration (config/walrus.toml as shipped, its state_dir moved to a temp dir), area
# eu, served on loopback by
#   embedded  `walrus-node dns serve --area eu` (release build; answers as `walrus-node run`)
#   bind      `named -g` (default threads: one per core) loaded with
#             `walrus-node dns bind-config --area eu`, `recursion no; notify no;`, all other
#             options at their defaults (README step 6)
# Both run for the whole benchmark (an idle server costs nothing). One query file (mostly
# `www.example.com A`, some area names, apex NS/SOA, a missing name and AAAA with none);
# `dnsperf -c 10 -l 15` (-q 100 outstanding), UDP and TCP (`-m tcp`). The two systems
# alternate run for run, the order swapped every round (embedded bind, bind embedded, ...)
# so drift on a shared machine falls on both. One JSON line per run:
#   {"round":..,"system":"embedded|bind","transport":"udp|tcp","qps":..,"avg_ms":..,
#    "p50_ms":..,"p99_ms":..,"lost":..}
# then one line per transport with the medians and the ratio embedded/bind:
#   {"transport":..,"embedded_qps":..,"bind_qps":..,"qps_ratio":..,"embedded_p99_ms":..,..}
# p50/p99 come from `dnsperf -v` (one line per reply with its latency, written to a file and
# read after the run); this dnsperf (2.10) has no latency histogram of its own. -v costs
# dnsperf a little CPU on both sides alike; WALRUS_BENCH_LATENCY=0 leaves it out (then
# p50_ms/p99_ms are null).
# Knobs (environment): WALRUS_BENCH_ROUNDS (default 3: 3 runs per system and transport),
# WALRUS_BENCH_SECONDS (default 15), WALRUS_BENCH_CLIENTS (default 10),
# WALRUS_BENCH_TRANSPORTS (default "udp tcp"), WALRUS_BENCH_DNSPERF_ARGS (extra dnsperf
# arguments, e.g. "-e" for EDNS), WALRUS_BENCH_NODE (a walrus-node binary: skips the build).
# Needs the Debian packages bind9 and dnsperf. Everything is stopped on exit.
#
# Measured 2026-12-05 on a 2-core machine shared with other builds (load 3-6), branch
# embedded-vs-bind after merging main c403826, `bash bench/dns-vs-bind.sh` (3 rounds, 15 s):
#   {"transport":"udp","runs":3,"embedded_qps":263969,"bind_qps":132951,"qps_ratio":1.99,
#    "embedded_p99_ms":0.332,"bind_p99_ms":3.858}
#   {"transport":"tcp","runs":3,"embedded_qps":124932,"bind_qps":110723,"qps_ratio":1.13,
#    "embedded_p99_ms":5.144,"bind_p99_ms":4.952}
# (BIND's runs: 127-140k qps UDP, 102-119k TCP; the embedded server's 252-287k UDP and
# 123-192k TCP.) How the UDP ratio got there, 2 rounds of 8 s each:
#   0.49-0.55  UDP_WORKERS=2 tokio tasks sharing the socket (main 171c6ab)
#   1.00       one blocking thread per core on the socket (recv_from/send_to, no reactor)
#   0.62-0.65  after main's BIND-like answers (1d890cb): per query most CPU went to hickory
#              name comparisons and label parsing (perf), not to the sockets
#   1.49       the reply cache (director/answer_cache.rs): a repeated question is a hash
#              lookup and a copy until the zones change
# TCP, same way: 1.24 with the reply cache, 3.09 once a connection reads through a buffer
# and answers pipelined requests in one write. After merging main b7cba04 (load 7-8, the
# machine busier), 3 rounds of 15 s:
#   {"transport":"udp","runs":3,"embedded_qps":203375,"bind_qps":130977,"qps_ratio":1.55,
#    "embedded_p99_ms":1.993,"bind_p99_ms":3.463}
#   {"transport":"tcp","runs":3,"embedded_qps":232380,"bind_qps":88836,"qps_ratio":2.62,
#    "embedded_p99_ms":4.458,"bind_p99_ms":6.388}
# dnsperf shares the two cores with the server it measures (and with other builds here):
# compare the ratios, not the absolute figures, across machines.
set -euo pipefail
cd "$(dirname "$0")/.."
for b in named tsig-keygen dnsperf; do
  command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] ||
    { echo "$b missing: apt-get install bind9 dnsperf" >&2; exit 1; }
done
PATH="$PATH:/usr/sbin"
ROUNDS="${WALRUS_BENCH_ROUNDS:-3}"
SECONDS_PER_RUN="${WALRUS_BENCH_SECONDS:-15}"
CLIENTS="${WALRUS_BENCH_CLIENTS:-10}"
TRANSPORTS="${WALRUS_BENCH_TRANSPORTS:-udp tcp}"
LATENCY="${WALRUS_BENCH_LATENCY:-1}"
read -r -a EXTRA <<<"${WALRUS_BENCH_DNSPERF_ARGS:-}"
NODE="${WALRUS_BENCH_NODE:-}"
if [ -z "$NODE" ]; then
  cargo build --release --quiet -p walrus-node --bin walrus-node
  NODE="target/release/walrus-node"
fi

DIR="$(mktemp -d /tmp/walrus-dns-bench.XXXXXX)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$DIR"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket
while True:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
    p = u.getsockname()[1]
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass'
}

# The configuration: as shipped, with the state in the temp dir (no stored answer: both
# serve the home cluster's servers).
mkdir -p "$DIR/state" "$DIR/bind"
sed "s|^state_dir = .*|state_dir = \"$DIR/state\"|" config/walrus.toml >"$DIR/walrus.toml"

# The embedded server.
EPORT="$(free_port)"
"$NODE" dns serve --config "$DIR/walrus.toml" --area eu --listen "127.0.0.1:$EPORT" \
  >"$DIR/embedded.log" 2>&1 &
PIDS+=($!)

# BIND from bind-config's output.
"$NODE" dns bind-config --config "$DIR/walrus.toml" --area eu --key-name walrus-eu \
  --zone-dir "$DIR/bind" >"$DIR/bind-config.out"
awk -v dir="$DIR/bind" '
  /^\/\/ ---- .* ----$/ { f = dir "/" $3; next }
  f { print > f }' "$DIR/bind-config.out"
BPORT="$(free_port)"
{
  tsig-keygen -a hmac-sha256 walrus-eu
  cat <<EOF
options {
	directory "$DIR/bind";
	pid-file "$DIR/bind/named.pid";
	session-keyfile "$DIR/bind/session.key";
	managed-keys-directory "$DIR/bind";
	listen-on port $BPORT { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	notify no;
};
controls { };
EOF
  cat "$DIR/bind/named.conf"
} >"$DIR/named.conf"
named -g -c "$DIR/named.conf" >"$DIR/named.log" 2>&1 &
PIDS+=($!)

# Both must serve both zones before the first run.
ready() {
  local port=$1 z
  for z in example.com area-eu.example.com; do
    dig +norecurse +time=1 +tries=1 -p "$port" @127.0.0.1 "$z" SOA | grep -q 'status: NOERROR' || return 1
  done
}
for i in $(seq 1 300); do
  ready "$EPORT" && ready "$BPORT" && break
  [ "$i" = 300 ] && { echo "servers not ready; logs:" >&2; cat "$DIR/embedded.log" "$DIR/named.log" >&2; exit 1; }
  sleep 0.1
done

# The query file: mostly the site name, as a resolver population asks.
{
  for _ in $(seq 1 80); do echo "www.example.com A"; done
  for _ in $(seq 1 8); do echo "www.area-eu.example.com A"; done
  echo "www.example.com AAAA"
  echo "www.area-eu.example.com AAAA"
  echo "example.com NS"
  echo "example.com SOA"
  echo "area-eu.example.com NS"
  echo "area-eu.example.com SOA"
  echo "ns.area-eu.example.com A"
  echo "nosuch.example.com A"
  echo "nosuch.area-eu.example.com A"
  echo "www.area-us.example.com A"
  echo "example.com MX"
  echo "www.example.com A"
} >"$DIR/queries"

# One dnsperf run: prints its JSON line and appends "system transport qps p99" to $DIR/runs.
run() {
  local round=$1 system=$2 transport=$3 port out lat
  port=$EPORT
  [ "$system" = bind ] && port=$BPORT
  out="$DIR/dnsperf.out"
  lat="$DIR/latency"
  local v=()
  [ "$LATENCY" = 1 ] && v=(-v)
  dnsperf -s 127.0.0.1 -p "$port" -m "$transport" -d "$DIR/queries" -c "$CLIENTS" \
    -l "$SECONDS_PER_RUN" "${v[@]}" "${EXTRA[@]}" >"$out" 2>&1 || true
  local qps avg lost p50=null p99=null
  qps=$(awk '/Queries per second:/ { print $4 }' "$out")
  avg=$(awk '/Average Latency \(s\):/ { printf "%.3f", $4 * 1000; exit }' "$out")
  lost=$(awk '/Queries lost:/ { print $3 }' "$out")
  if [ -z "$qps" ]; then
    echo "dnsperf failed against $system ($transport):" >&2
    tail -20 "$out" >&2
    exit 1
  fi
  if [ "$LATENCY" = 1 ]; then
    # -v lines: "> NOERROR www.example.com A 0.000123" (the latency in seconds is last).
    awk '/^> / { print $NF }' "$out" | sort -g >"$lat"
    local n
    n=$(wc -l <"$lat")
    if [ "$n" -gt 0 ]; then
      p50=$(awk -v n="$n" 'NR == int(n * 0.50) + 1 { printf "%.3f", $1 * 1000; exit }' "$lat")
      p99=$(awk -v n="$n" 'NR == int(n * 0.99) + 1 { printf "%.3f", $1 * 1000; exit }' "$lat")
    fi
  fi
  printf '{"round":%d,"system":"%s","transport":"%s","qps":%.0f,"avg_ms":%s,"p50_ms":%s,"p99_ms":%s,"lost":%s,"clients":%d,"seconds":%d}\n' \
    "$round" "$system" "$transport" "$qps" "$avg" "$p50" "$p99" "$lost" "$CLIENTS" "$SECONDS_PER_RUN"
  echo "$system $transport $qps $p99" >>"$DIR/runs"
}

: >"$DIR/runs"
for round in $(seq 1 "$ROUNDS"); do
  for transport in $TRANSPORTS; do
    if [ $((round % 2)) = 1 ]; then order="embedded bind"; else order="bind embedded"; fi
    for system in $order; do run "$round" "$system" "$transport"; done
  done
done

# Medians per system and transport, and the ratios (embedded / bind: above 1 is faster).
for transport in $TRANSPORTS; do
  awk -v t="$transport" '
    function median(a, n,   i, j, x) {
      for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j > 0 && a[j] > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    $2 == t && $1 == "embedded" { eq[++ne] = $3; if ($4 != "null") ep[++nep] = $4 }
    $2 == t && $1 == "bind"     { bq[++nb] = $3; if ($4 != "null") bp[++nbp] = $4 }
    END {
      e = median(eq, ne); b = median(bq, nb)
      p = "null"; q = "null"
      if (nep) p = sprintf("%.3f", median(ep, nep))
      if (nbp) q = sprintf("%.3f", median(bp, nbp))
      printf "{\"transport\":\"%s\",\"runs\":%d,\"embedded_qps\":%.0f,\"bind_qps\":%.0f,\"qps_ratio\":%.2f,\"embedded_p99_ms\":%s,\"bind_p99_ms\":%s}\n", t, ne, e, b, e / b, p, q
    }' "$DIR/runs"
done
