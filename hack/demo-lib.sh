# shellcheck shell=bash
# Settings and helpers shared by demo.sh and demo-down.sh. Source it after `set -euo pipefail`.
# shellcheck disable=SC2034 # the settings are used by the scripts that source this file

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NAMESPACE=plant-berlin
LEASE_NAMESPACE=millrace-system
# The flows of examples/manufacturing/flows, in the order their workers get ports.
FLOWS=(order-to-fulfillment production-to-inventory shipment-to-cash procure-to-receipt
  carrier-milestones scrap-to-finance inventory-sync)

DEMO_DIR="$MILLRACE_HOME/demo"
DEMO_RUN_DIR="$DEMO_DIR/run"    # pid files
DEMO_LOG_DIR="$DEMO_DIR/logs"
LEDGER="$DEMO_DIR/ledger.jsonl"
VERDICT="$DEMO_DIR/verdict.json"

# Loopback addresses. The ERP's must match baseUrl in examples/manufacturing/connections.yaml.
ERP_LISTEN=127.0.0.1:18090
OPERATOR_METRICS=127.0.0.1:18080
WORKER_BASE_PORT=19101
# Must match the Secret s4-berlin-api in examples/manufacturing/secrets.yaml (local demo value).
ERP_CREDENTIALS="millrace-demo:local-only-not-a-secret"

TARGET_DIR="${CARGO_TARGET_DIR:-$MILLRACE_HOME/target}"
export CARGO_TARGET_DIR="$TARGET_DIR"
_profile_dir() { [[ ${MILLRACE_DEMO_PROFILE:-debug} == release ]] && echo release || echo debug; }
OPERATOR="$TARGET_DIR/$(_profile_dir)/millrace-operator"
WORKER="$TARGET_DIR/$(_profile_dir)/millrace-worker"
SIMULATOR="$TARGET_DIR/$(_profile_dir)/millrace-simulator"

worker_port() { echo $((WORKER_BASE_PORT + $1)); }

# start_bg NAME CMD...: start CMD detached with its output in $DEMO_LOG_DIR/NAME.log; record its pid.
start_bg() {
  local name=$1
  shift
  mkdir -p "$DEMO_RUN_DIR" "$DEMO_LOG_DIR"
  KUBECONFIG="$KUBECONFIG_PATH" setsid "$@" </dev/null >>"$DEMO_LOG_DIR/$name.log" 2>&1 &
  echo $! >"$DEMO_RUN_DIR/$name.pid"
}

# demo_pid NAME: the pid of a live demo process, or fail.
demo_pid() {
  local file="$DEMO_RUN_DIR/$1.pid" pid
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

# wait_for LABEL TIMEOUT NAME CMD...: poll CMD every second; fail early if process NAME died.
wait_for() {
  local label=$1 timeout=$2 name=$3
  shift 3
  local started=$SECONDS last=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if ! demo_pid "$name" >/dev/null; then
      warn "$name exited while waiting for $label; last lines of $DEMO_LOG_DIR/$name.log:"
      tail -n 30 "$DEMO_LOG_DIR/$name.log" >&2 || true
      return 1
    fi
    if ((SECONDS - started >= timeout)); then
      warn "timed out after ${timeout}s waiting for $label"
      return 1
    fi
    if ((SECONDS - last >= 15)); then
      last=$SECONDS
      log "    ... still waiting for $label ($(elapsed_since "$started"))"
    fi
    sleep 1
  done
  log "    $label: ok ($(elapsed_since "$started"))"
}

# stop_one NAME [GRACE]: SIGTERM the process group of demo process NAME, then SIGKILL after GRACE seconds.
stop_one() {
  local name=$1 grace=${2:-25} pid waited=0
  if pid=$(demo_pid "$name"); then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && ((waited < grace)); do
      sleep 1
      waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
      warn "$name (pid $pid) did not stop within ${grace}s; killing it"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    log "    stopped $name (pid $pid)"
  fi
  rm -f "$DEMO_RUN_DIR/$name.pid"
}

stop_workers() {
  local flow
  for flow in "${FLOWS[@]}"; do stop_one "worker-$flow" 25; done
}

# delete_scenario_namespace: delete the scenario's namespace, waiting for it to go. Flows use
# deletionPolicy Delete, so a running operator removes their queues through its finalizer. Without
# an operator, or when it has not finished after 60s, the finalizers are removed so that the
# namespace can go (the flows' queues may then stay behind on the broker).
delete_scenario_namespace() {
  kctl get namespace "$NAMESPACE" >/dev/null 2>&1 || return 0
  kctl delete namespace "$NAMESPACE" --wait=false >/dev/null
  local started=$SECONDS patched=0
  while kctl get namespace "$NAMESPACE" >/dev/null 2>&1; do
    local waited=$((SECONDS - started))
    if ((patched == 0)) && { ((waited >= 60)) || { ((waited >= 10)) && ! demo_pid operator >/dev/null; }; }; then
      patched=1
      warn "removing the finalizers of the Millrace objects left in $NAMESPACE (no operator finished them)"
      local obj
      for obj in $(kctl get integrationflows,partnerconnections,eventcontracts -n "$NAMESPACE" -o name 2>/dev/null); do
        kctl patch "$obj" -n "$NAMESPACE" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
      done
    fi
    if ((waited >= 180)); then
      warn "namespace $NAMESPACE is still terminating after 180s"
      return 1
    fi
    sleep 1
  done
  log "    namespace $NAMESPACE deleted ($(elapsed_since "$started"))"
}
