#!/usr/bin/env bash
# Replicator vs rsync, one run on this machine (issue 7, "Must show" 3).
#
# Builds the benchmark in release mode, then `replicate bench` generates the data set under
# a fresh directory in /tmp (20,000 files: 19,950 of 1-50 KiB log-uniform and 50 of
# 2-8 MiB in 1,111 directories, plus one 200 MiB file; about 755 MB), starts an rsync daemon
# on 127.0.0.1, and prints one JSON line per case:
#   {"case":"full|small|append","walrus_s":..,"rsync_s":..,"ratio":..}   ratio = rsync_s / walrus_s
# then the primary's first scan and the live watcher's change-to-visible latency (p50, p99).
# rsync runs `rsync -a --delete SRC/ rsync://127.0.0.1:PORT/bench/rsync/`; walrus runs the
# primary -> replica transfer on loopback over each transport of `[replicator] transport`:
# "quic" (walrus-gcs's point-to-point QUIC streams, the default) and "tls-tcp" (TLS 1.3
# over TCP with the same certificates); the "transport" field says which.
# (WALRUS_BENCH_TRANSPORTS="quic tls-tcp tcp" adds plain TCP, to see what TLS costs.)
# Each measured run starts from dropped caches with the source read back in, writes into a
# fresh never-used directory (full case), and the two systems alternate which goes first.
# Neither side fsyncs. Needs root (drop_caches) and the Debian package `rsync`.
# The full case runs WALRUS_BENCH_FULL_ROUNDS rounds (default 2) of rsync, walrus, walrus,
# rsync: walrus_s and rsync_s are the means of 4 runs each, "ratio_of_medians" the ratio of
# their medians, and the *_runs_s / *_cpu_s lists give every run. Over QUIC the line ends
# with both ends' link counters ("quic_replica", "quic_primary": path MTU, packets sent and
# lost, black holes, datagrams per send). WALRUS_BENCH_FULL_ONLY=1 stops after the full
# case; WALRUS_BENCH_PERF_CTL=FIFO drives `perf record --control=fifo:FIFO -D -1` so a
# profile holds only the syncs.
# walrus_s runs from the primary's rescan to the replica's atomic switch of `current`,
# except in the full case: a replica's first sync starts from the generation the primary
# has already published (its watcher keeps it current), so there walrus_s runs from the
# pull's start to the switch, and the line adds the rescan that preceded it
# ("primary_rescan_s": it finds nothing new) and "walrus_with_rescan_s" /
# "ratio_with_rescan", the figures with it counted (as before 2026-11-26, session 4). The
# small case prints two lines: "rescan":"full" (a stat of every file, hashing only the
# changed ones: the primary's periodic safety net) and "rescan":"watched" (20 other files,
# and the rescan covers the paths inotify reported, as the running primary's watcher does;
# the debounce quiet period is not counted: see the watch line for change-to-visible); walrus_parts_ms splits it
# (scan, manifest, layout, fetch, switch) and adds what follows the switch (prune: removing
# old generations, and after the first generation making the spare: a hard-linked copy of
# it that the next build recycles). A replica builds a new generation by recycling the tree
# it would prune next (or the spare) and changing it in place, so a small change costs
# what changed, not the whole tree (walrus_recycled says whether it did).
# The data set is deleted on exit.
# The append case: the primary rehashes a grown file from its last chunk after re-checking
# the chunks before it (one parallel blake3 pass), and the replica copies the unchanged
# chunks from its previous generation with copy_file_range and checks only fetched chunks.
# Measured 2026-11-26 (2 cores shared with other builds; one run each, noisy), branch
# append-perf, `bash bench/replicator-vs-rsync.sh`:
#   {"case":"full","walrus_s":1.313,"rsync_s":1.386,"ratio":1.06,...}
#   {"case":"small","walrus_s":0.150,"rsync_s":0.423,"ratio":2.82,...}
#   {"case":"append","walrus_s":0.893,"rsync_s":1.228,"ratio":1.37,"walrus_fetched":1129148,
#    "walrus_parts_ms":{"scan":245,"manifest":8,"layout":19,"fetch":585,"switch":36,"prune":0}}
# A second run, the machine busier (full: walrus 2.387 s, rsync 2.510 s):
#   {"case":"append","walrus_s":0.743,"rsync_s":1.275,"ratio":1.71,"walrus_fetched":1129148,
#    "walrus_parts_ms":{"scan":436,"manifest":12,"layout":37,"fetch":205,"switch":52,"prune":0}}
# (main just before, same machine: append walrus_s 0.866 / rsync_s 1.715, scan 332 ms,
#  fetch 447 ms; earlier main runs: scan ~400 ms, fetch ~876 ms, ratio 0.84-1.09.)
# Final main (7a06b28), an idle machine (load ~0), two runs, ratios full / small / append:
#   1.49 / 2.13 / 1.37 and 1.14 / 2.65 / 2.35; watcher p50 60-66 ms, p99 112-133 ms.
#   The small case is mostly the primary's full rescan after dropped caches (129-141 ms).
# All figures above and in the next block ran over plain TCP ("tcp-loopback"), before the
# bench used the Replicator's real transports.
# With the two small lines (main after a930563, idle machine, load 0.02, plain TCP):
#   {"case":"full","walrus_s":1.151,"rsync_s":1.418,"ratio":1.23,...}
#   {"case":"small","walrus_s":0.183,"rsync_s":0.428,"ratio":2.34,"rescan":"full",
#    "walrus_parts_ms":{"scan":141,"manifest":12,"layout":15,"fetch":10,"switch":4,"prune":0}}
#   {"case":"small","walrus_s":0.051,"rsync_s":0.417,"ratio":8.19,"rescan":"watched",
#    "walrus_parts_ms":{"scan":13,"manifest":9,"layout":19,"fetch":7,"switch":3,"prune":0}}
#   {"case":"append","walrus_s":1.045,"rsync_s":1.438,"ratio":1.38,...}
#   {"case":"watch","changes":50,"p50_ms":63.1,"p99_ms":117.2,"quiet_ms":20,...}
# Over the real transports (load ~1), `bash bench/replicator-vs-rsync.sh`:
#   quic:    full 2.500 s vs rsync 1.481 s (0.59), small full-rescan 0.174/0.418 (2.40),
#            small watched 0.049/0.352 (7.20), append 0.874/1.283 (1.47),
#            watch p50 65.6 ms p99 138.3 ms
#   tls-tcp: full 1.628 s vs rsync 1.524 s (0.94), small full-rescan 0.141/0.391 (2.78),
#            small watched 0.056/0.354 (6.36), append 0.435/1.242 (2.85),
#            watch p50 62.8 ms p99 128.0 ms
#   The full case is bound by QUIC itself: one QUIC stream moves 460-570 MB/s on this
#   machine where TLS over TCP moves 1.0-1.4 GB/s and plain TCP 2.3-2.4 GB/s
#   (`cargo run --release -p walrus-gcs --example transport_bench -- --streams 1024`). The rsync
#   daemon encrypts nothing; Walrus's streams are TLS 1.3 with mutual authentication.
# After the QUIC socket got 4 MiB UDP buffers (before: ~800 datagrams per GiB dropped at the
# receiver's 208 KiB buffer, each taken for loss), one run at load ~0.8:
#   quic:    full 2.543 vs 1.704 (0.67; its two runs 2.18 and 2.91 s), small full-rescan
#            0.222/0.406 (1.83), small watched 0.101/0.407 (4.04), append 0.945/1.245 (1.32)
#   tls-tcp: full 1.626 vs 1.598 (0.98), small full-rescan 0.144/0.374 (2.60),
#            small watched 0.047/0.363 (7.70), append 0.885/1.274 (1.44)
# Session 4 (2026-11-26): quinn's GSO batches had been broken for any MTU above ~6 550 and
# discovery stopped at 1 452; the bound is now 6 500 (walrus-gcs MTU_UPPER_BOUND_MAX), and
# one QUIC stream moves 920-1 120 MB/s (tls-tcp 1 030-1 210, tcp 1 850-1 960; 530 at
# 1 452). A first sync writes files under their own names (no rename). Three runs, load ~1.2:
#   quic full:    1.443/1.305 (0.90; with rescan 0.83), 1.511/1.474 (0.98; 0.90),
#                 1.571/1.671 (1.06; 0.98)
#   tls-tcp full: 1.558/1.896 (1.22; with rescan 1.11)
#   quic small 2.19-2.78 (full rescan), 5.44 (watched); append 1.53; watch p50 70 ms, p99 136 ms
#   tls-tcp small 2.22 / 7.04; append 1.48; watch p50 62 ms, p99 140 ms
#   three more quic runs: full 1.11 (1.03), 0.93 (0.86), 0.96 (0.89); append 2.40, 1.38, 2.68;
#   watched 6.34, 7.17, 6.38. Median of six quic full runs 0.97 (with the rescan 0.90).
# The full line now has "walrus_cpu_s" (this process, the prune and spare after the switch
# included) and "rsync_cpu_s" (client + daemon connection process), from /proc/PID/stat:
#   quic    full 1.558/1.617 (1.04; with rescan 0.95), CPU walrus 2.78, 2.57 / rsync 2.84, 2.06
#   tls-tcp full 1.289/1.627 (1.26; with rescan 1.15), CPU walrus 2.17, 2.50 / rsync 2.31, 2.52
# The full case is bound by CPU: both ends and rsync's share 2 cores. Walrus's profile then:
# TLS on both ends ~9%, quinn's copies ~8%, blake3 checks on the replica ~7%; the rsync
# daemon encrypts nothing.
# Session 5 (2026-11-26): TLS links prefer AES-128-GCM; a replica checks fetched files by
# an XXH3-128 transfer check (computed by the primary's scan from the same read as the
# blake3 hash) instead of re-hashing them with blake3; it writes data straight from the
# stream's read buffer; and a helper thread creates a pull's files ahead of their bytes.
# Two whole runs (idle machine, load < 1), 4 full runs per system per line:
#   quic    full 1.469/1.754 (1.19; medians 1.40; with rescan 1.08), small 2.13 / 6.30,
#           append 1.45, watch p50 67 ms p99 107 ms
#           full 1.390/1.544 (1.11; medians 1.09; with rescan 1.01), small 2.19 / 7.12,
#           append 2.29, watch p50 67 ms p99 118 ms
#   tls-tcp full 1.210/1.596 (1.32; medians 1.29; with rescan 1.19), small 2.07 / 6.19,
#           append 1.35
#           full 1.146/1.480 (1.29; medians 1.26; with rescan 1.16), small 2.22 / 6.76,
#           append 1.38, watch p50 67 ms p99 121 ms
#   Full-only quic runs (WALRUS_BENCH_FULL_ONLY=1) after each step, ratio of means:
#   AES-128 1.18, 1.07; + transfer check 1.07, 1.15; + reading in place 1.20, 1.15, 1.19;
#   + open-ahead 1.31, 1.35, 1.19, 1.13.
#   CPU seconds per full run: walrus 2.1-2.8, rsync 2.0-3.0: the two use about the same CPU;
#   Walrus wins by running its two ends and the file creation on both cores.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v rsync >/dev/null || { echo "rsync missing: apt-get install rsync" >&2; exit 1; }
cargo build --release --quiet -p walrus-actors --example replicate
PORT=${RSYNC_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
# One whole run per transport of `[replicator] transport` (each with its own rsync runs).
for transport in ${WALRUS_BENCH_TRANSPORTS:-quic tls-tcp}; do
  WORK=$(mktemp -d /tmp/walrus-bench.XXXXXX)
  trap 'rm -rf "$WORK"' EXIT
  WALRUS_BENCH_TRANSPORT=$transport target/release/examples/replicate bench "$WORK" --rsync-port "$PORT"
  rm -rf "$WORK"
done
