#!/usr/bin/env bash
# Failover time end to end (issue 8, "Must show" 3): from `kill -9` of the last web server
# of a cluster (a real nginx, `master_process off`) to the area's new answer visible at its
# name server, polled with a DNS query every 10 ms. round_period 1 s, 20 trials per backend:
#   embedded  the Director's own name server (walrus-node)
#   bind      a real BIND 9 per area, updated by the Director with RFC 2136 + TSIG
#   director-host-dies (bind only): a1's only Director's walrus-node SIGKILLed at the same
#             moment as the rest of its cluster: the master's node writes a1's BIND itself
#             (issue 17). `--case cluster-dies|director-host-dies|all` (default all).
# Prints one JSON line per case and backend:
#   {"case":..,"backend":..,"trials":..,"p50_ms":..,"p99_ms":..,...}
# The deployment (three Controllers, Directors and Reporters as separate `walrus-node run`
# processes over QUIC, nginx, BIND) is the end-to-end tests' (walrus-testkit/src/actors/deployment.rs);
# the orchestration is walrus-node/examples/failover_bench.rs. Everything runs on loopback and is
# stopped on exit. Needs the Debian packages bind9, bind9-dnsutils, nginx.
# Extra arguments go to the orchestrator, e.g. `bench/failover.sh --trials 5 --backend bind`
# or `--report-interval 250ms` (default 1s, like round_period).
#
# Measured 2026-11-26 (2-core machine shared with other builds, load 5-9):
#   {"backend":"embedded","trials":20,"p50_ms":825,"p99_ms":1348,...,"report_interval":"1s"}
#   {"backend":"bind","trials":20,"p50_ms":700,"p99_ms":1235,...,"report_interval":"1s"}
# and with --report-interval 250ms: embedded p50 542 / p99 1049 ms, bind 719 / 1190 ms.
# Measured 2026-12-05 (same kind of machine, load 6-9 from parallel builds), 20 trials each:
#   {"case":"cluster-dies","backend":"embedded","p50_ms":938,"p99_ms":1399,...}
#   {"case":"cluster-dies","backend":"bind","p50_ms":797,"p99_ms":1296,...}
#   {"case":"director-host-dies","backend":"bind","p50_ms":1209,"p99_ms":1760,"min_ms":814,...}
# director-host-dies adds the failure detection of the dead Director's node (about 1 s with
# gcs_profile lan) before the master's node may write; its first two runs showed one 7.3-7.6 s
# trial, the first one: the deployment's start-up rounds spare a silent server, which the
# orchestrator now waits out.
# Where the time went: the Reporter saw the refused connection at its next reading
# (0-report_interval), the master asked at its next round (0-round_period) and closed it as
# soon as every server had answered; the Director's update takes milliseconds.
#
# With fast failover (issue 23, `[timing] fast_failover = true`, the default), measured
# 2026-12-05 on the same kind of machine (2 cores shared with other builds), 10 trials:
#   {"case":"cluster-dies","backend":"embedded","p50_ms":63,"p99_ms":113,"min_ms":21}
#   {"case":"cluster-dies","backend":"bind","p50_ms":62,"p99_ms":103,"min_ms":25}
#   {"case":"director-host-dies","backend":"bind","p50_ms":473,"p99_ms":544,"min_ms":450}
# and, the same hour, the paper's rounds (the branch point, 10 trials): cluster-dies
# embedded 760 / 1299 ms, bind 780 / 1268 ms.
# Now: the Reporter's probe sees the refusal within 100 ms and multicasts an urgent PANIC;
# the master runs an early round at once, which closes as soon as every Reporter answered.
# director-host-dies waits report_timeout (400 ms) for the dead host's silent Reporter.
#
# Before/after the roles became actix actors (issue 19), measured 2026-12-06 on a quiet
# machine (load < 1), alternated, `--trials 10 --case cluster-dies`: before (39961f2)
# embedded p50 61 / p99 93 ms, bind 62 / 104; after (898e6b2) embedded 61 / 101 and
# 72 / 82, bind 31 / 82 and 51 / 72.
set -euo pipefail
cd "$(dirname "$0")/.."
for b in named nginx tsig-keygen; do
  command -v "$b" >/dev/null || [ -x "/usr/sbin/$b" ] || { echo "$b missing: apt-get install bind9 bind9-dnsutils nginx" >&2; exit 1; }
done
cargo build --release --quiet -p walrus-node --bin walrus-node
cargo build --release --quiet -p walrus-node --example failover_bench
exec target/release/examples/failover_bench --walrus-node target/release/walrus-node \
  --trials 20 --round-period 1s --case all "$@"
