#!/usr/bin/env bash
# The WAN lab's long form (issue 18): every setting of docs/wan, one after the other, the
# machine's load sampled beside (docs/wan/load.txt). As root. Results accumulate in
# docs/wan/results.json (a run replaces the one of the same name); docs/wan/results.md and
# the plots are rewritten after each run. Usage: bench/wan.sh [PROFILE] [LONG_SECONDS] [RUN...]
#   PROFILE: debug (default) or release; LONG_SECONDS: the length of each loss setting's
#   run (600: the issue asks for at least 10 minutes per setting); RUN...: only the runs of
#   these names (e.g. `bench/wan.sh release 600 loss-0 loss-3`), default all.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-debug}
long=${2:-600}
shift $(( $# < 2 ? $# : 2 ))
only=" $* "
flag=""; [ "$profile" = release ] && flag="--release"
cargo build $flag -p walrus-node -p walrus-lab --bin walrus-node --bin walrus-lab
lab="target/$profile/walrus-lab"
out=docs/wan
mkdir -p "$out"
( while sleep 10; do echo "$(date -u +%H:%M:%S) $(cut -d' ' -f1-4 /proc/loadavg)"; done ) >> "$out/load.txt" &
sampler=$!
trap 'kill $sampler' EXIT
run() {
    # $2 is the run's name (every call below starts with --name NAME).
    [ "$only" = "  " ] || [[ "$only" == *" $2 "* ]] || return 0
    echo "== $*" >&2
    "$lab" wan --out "$out" "$@"
}
# Before: the timing a `gcs_profile = "wan"` node got until issue 18 (1 s rounds, 400 ms).
run --name before-timing-1s-400ms --loss 1 --seconds 180 --timing round_period=1s,report_timeout=400ms --deploy-mb 0 --event-every 45
# After: the wan defaults (3 s rounds, 2.25 s report timeout), every setting.
run --name loss-1 --loss 1 --seconds "$long" --deploy-mb 30 --deploy-files 300 --deploy-steps 1 --event-every 60
run --name loss-0 --loss 0 --seconds "$long" --deploy-mb 200 --deploy-files 2000 --deploy-steps 1 --event-every 60
run --name loss-3 --loss 3 --seconds "$long" --deploy-mb 30 --deploy-files 300 --deploy-steps 1 --event-every 60
# The deploy grace, before and after: a deploy in two parts 10 s apart (two generations,
# so replicas still pulling the first lag by two), with the rule before issue 18
# (generation_grace = "0s": lag counted from the announcement) and with the default.
run --name before-grace-0s --loss 1 --seconds 150 --deploy-mb 30 --deploy-files 300 --deploy-steps 2 --event-every 0 --generation-grace 0s
run --name after-grace-10m --loss 1 --seconds 150 --deploy-mb 30 --deploy-files 300 --deploy-steps 2 --event-every 0
