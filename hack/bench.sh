#!/usr/bin/env bash
# `make bench`: builds the release binaries, then runs millrace-bench, which measures a bare lapin relay
# and the worker's full pipeline side by side on the local RabbitMQ.
#
# The bench prints its own progress (step, how far along, elapsed), every round's figures, and a
# summary table. Its last line is
#   bench: baseline_msgs_per_s=N pipeline_msgs_per_s=N ratio=R p99_added_ms=X worker_rss_mib=Y ...
# (p99_added_ms may be `saturated`; more keys follow, see docs/benchmarks.md).
# Knobs (environment): BENCH_MESSAGES (backlog per throughput round, default 40000), BENCH_ROUNDS
# (rounds per side, alternating, default 3), BENCH_LATENCY_SECONDS (default 15), BENCH_LATENCY_LOAD
# (offered rate as a fraction of the baseline median, default 0.3), BENCH_WORKER_ENV (extra
# environment of the worker, e.g. "MALLOC_ARENA_MAX=2"). Extra arguments go to millrace-bench.
# See docs/benchmarks.md for the method and the recorded results.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$HACK_DIR")"
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$MILLRACE_HOME/target}"
CARGO="${CARGO:-cargo}"

cd "$REPO_DIR"
# One package set for every release build of the benches (bench-cli builds a subset of it), so that
# cargo resolves the same features and nothing is compiled twice.
step 1 3 "building millrace-operator, millrace-worker, millrace-cli and millrace-bench (release)"
"$CARGO" build --release -p millrace-operator -p millrace-worker -p millrace-cli -p millrace-bench

step 2 3 "checking RabbitMQ on 127.0.0.1:$RABBITMQ_AMQP_PORT"
if ! (exec 3<>"/dev/tcp/127.0.0.1/$RABBITMQ_AMQP_PORT") 2>/dev/null; then
  die "RabbitMQ does not answer on 127.0.0.1:$RABBITMQ_AMQP_PORT; run \`make env-up\`"
fi

step 3 3 "running the bench (load on this machine skews absolute figures; the ratio is side by side)"
log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
# The binary itself: `cargo run -p millrace-bench` alone would resolve other features and rebuild.
"$CARGO_TARGET_DIR/release/millrace-bench" "$@"
