#!/usr/bin/env bash
# `make demo`: the manufacturing scenario end to end on the local environment.
#
# Builds the binaries, starts the local control plane and RabbitMQ, starts the partner simulators
# (ERP API, WMS/TMS receivers) and the operator, applies examples/manufacturing, runs one worker
# process per rendered flow, publishes events for a minute with ERP failures injected, and
# accounts for every event. Exits non-zero if a flow is not Ready or an event is unaccounted for.
#
# Pods in the local environment are scheduled onto a kwok node and run no process, so the demo
# runs `millrace-worker --configmap NAMESPACE/NAME` on the host for each flow's rendered ConfigMap.
#
# Knobs (environment): MILLRACE_DEMO_DURATION (60s), MILLRACE_DEMO_RATE (20 events/s),
# MILLRACE_DEMO_PROFILE (debug|release), MILLRACE_DEMO_ERP_FAIL_RATE (0.2).
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$HACK_DIR")"
# shellcheck source=hack/demo-lib.sh
source "$HACK_DIR/demo-lib.sh"

DURATION="${MILLRACE_DEMO_DURATION:-60s}"
RATE="${MILLRACE_DEMO_RATE:-20}"
PROFILE="${MILLRACE_DEMO_PROFILE:-debug}"
ERP_FAIL_RATE="${MILLRACE_DEMO_ERP_FAIL_RATE:-0.2}"
TOTAL=10

main() {
  log "Millrace demo: the plant-berlin manufacturing scenario (MILLRACE_HOME=$MILLRACE_HOME)"

  step 1 $TOTAL "building millrace-operator, millrace-worker and millrace-simulator ($PROFILE)"
  build_binaries

  step 2 $TOTAL "local environment (control plane, kwok, RabbitMQ)"
  "$HACK_DIR/env-up.sh" 2>&1 | sed 's/^/    | /'
  [[ -s $KUBECONFIG_PATH ]] || die "env-up did not write $KUBECONFIG_PATH"
  export KUBECONFIG="$KUBECONFIG_PATH"

  step 3 $TOTAL "clearing any previous demo run"
  stop_workers
  delete_scenario_namespace
  stop_one operator 15
  stop_one partners 10
  mkdir -p "$DEMO_DIR" "$DEMO_LOG_DIR"
  rm -f "$LEDGER" "$VERDICT"

  step 4 $TOTAL "starting the partner simulators: ERP API on $ERP_LISTEN, WMS/TMS inbound receivers"
  start_bg partners "$SIMULATOR" partners --listen "$ERP_LISTEN" \
    --erp-credentials "$ERP_CREDENTIALS" \
    --erp-fail-rate "$ERP_FAIL_RATE" --erp-latency-ms 40 \
    --erp-reject-rate 0.005 --erp-lost-response-rate 0.02
  wait_for "the ERP API" 30 partners curl -fsS "http://$ERP_LISTEN/erp/api/health"

  step 5 $TOTAL "applying the CRDs and the scenario (server-side apply)"
  kctl apply --server-side --force-conflicts --field-manager millrace-demo -f "$REPO_DIR/crds/yaml" >/dev/null
  kctl wait --for condition=Established --timeout 60s crd/eventcontracts.millrace.dev \
    crd/partnerconnections.millrace.dev crd/integrationflows.millrace.dev >/dev/null
  apply_scenario
  log "    applied: $(kctl get eventcontracts,partnerconnections,integrationflows -n "$NAMESPACE" -o name | wc -l) Millrace objects in $NAMESPACE"

  step 6 $TOTAL "starting the operator (leader election on $LEASE_NAMESPACE/millrace-operator)"
  kctl create namespace "$LEASE_NAMESPACE" --dry-run=client -o yaml | kctl apply --server-side -f - >/dev/null
  start_bg operator env POD_NAMESPACE="$LEASE_NAMESPACE" "$OPERATOR" run \
    --worker-image "millrace-worker:dev" \
    --metrics-addr "$OPERATOR_METRICS" \
    --lease-namespace "$LEASE_NAMESPACE" \
    --drift-interval 30s --sample-interval 5s
  wait_for "the operator's /readyz" 60 operator curl -fsS "http://$OPERATOR_METRICS/readyz"
  wait_for "a rendered ConfigMap for each of the ${#FLOWS[@]} flows" 120 operator all_configmaps_rendered

  step 7 $TOTAL "starting one millrace-worker process per flow (kwok pods run no process)"
  start_workers
  wait_for "every flow to be Ready" 180 operator all_flows_ready || {
    kctl get millrace -n "$NAMESPACE" || true
    die "not every flow became Ready; see $DEMO_LOG_DIR and kubectl describe integrationflow -n $NAMESPACE"
  }
  kctl get integrationflows -n "$NAMESPACE" | sed 's/^/    /'

  step 8 $TOTAL "publishing events for $DURATION at $RATE/s: ERP returns 503 on ${ERP_FAIL_RATE} of postings, plus an 8s outage"
  "$SIMULATOR" events --duration "$DURATION" --rate "$RATE" \
    --ledger "$LEDGER" --invalid-rate 0.01 \
    --ingress "order-to-fulfillment=$(ingress_url order-to-fulfillment)" \
    --ingress-auth hmac --ingress-secret-file "$DEMO_DIR/ingress.key" \
    --partners-url "http://$ERP_LISTEN" --erp-outage 20s+8s 2>&1 | sed 's/^/    | /'

  step 9 $TOTAL "waiting for retries to settle, then accounting for every event"
  local report_rc=0 metrics=() i
  for i in "${!FLOWS[@]}"; do
    metrics+=(--metrics "${FLOWS[$i]}=http://127.0.0.1:$(worker_port "$i")/metrics")
  done
  "$SIMULATOR" report --ledger "$LEDGER" --partners-url "http://$ERP_LISTEN" \
    --namespace "$NAMESPACE" --wait 150s --json "$VERDICT" "${metrics[@]}" | tee "$DEMO_DIR/report.txt" ||
    report_rc=$?

  step 10 $TOTAL "final state"
  echo
  kctl get millrace -n "$NAMESPACE"
  echo
  local not_ready
  not_ready=$(flows_not_ready)
  summary "$report_rc" "$not_ready"
}

build_binaries() {
  local flags=()
  [[ $PROFILE == release ]] && flags+=(--release)
  local cargo_log="$DEMO_DIR/build.log"
  mkdir -p "$DEMO_DIR"
  run_with_heartbeat "cargo build" "$cargo_log" \
    cargo build "${flags[@]}" -p millrace-operator -p millrace-worker -p millrace-simulator
  for bin in "$OPERATOR" "$WORKER" "$SIMULATOR"; do
    [[ -x $bin ]] || die "$bin was not built; see $cargo_log"
  done
  "$OPERATOR" run --help >/dev/null 2>&1 ||
    die "this millrace-operator has no 'run' command yet; the demo needs the operator's controllers"
}

apply_scenario() {
  local dir="$REPO_DIR/examples/manufacturing"
  kctl apply --server-side --field-manager millrace-demo -f "$dir/namespace.yaml" >/dev/null
  kctl apply --server-side --field-manager millrace-demo -n "$NAMESPACE" \
    -f "$dir/secrets.yaml" -f "$dir/lookups.yaml" -f "$dir/contracts" -f "$dir/connections.yaml" \
    -f "$dir/flows" | sed 's/^/    /'
  kctl get secret erp-ingress-hmac -n "$NAMESPACE" -o jsonpath='{.data.key}' | base64 -d >"$DEMO_DIR/ingress.key"
  chmod 600 "$DEMO_DIR/ingress.key"
}

all_configmaps_rendered() {
  local flow
  for flow in "${FLOWS[@]}"; do
    kctl get configmap "$flow-worker" -n "$NAMESPACE" >/dev/null 2>&1 || return 1
  done
}

start_workers() {
  local i=0 flow port
  for flow in "${FLOWS[@]}"; do
    port=$(worker_port "$i")
    start_bg "worker-$flow" "$WORKER" --configmap "$NAMESPACE/$flow-worker" --listen "127.0.0.1:$port"
    i=$((i + 1))
  done
  i=0
  for flow in "${FLOWS[@]}"; do
    port=$(worker_port "$i")
    wait_for "worker $flow on :$port" 60 "worker-$flow" curl -fsS "http://127.0.0.1:$port/readyz"
    i=$((i + 1))
  done
  log "    ${#FLOWS[@]} workers ready on 127.0.0.1:$(worker_port 0)-$(worker_port $((${#FLOWS[@]} - 1)))"
}

ingress_url() {
  local i
  for i in "${!FLOWS[@]}"; do
    if [[ ${FLOWS[$i]} == "$1" ]]; then
      echo "http://127.0.0.1:$(worker_port "$i")/ingest/$1"
      return
    fi
  done
  die "no flow $1"
}

all_flows_ready() { [[ -z $(flows_not_ready) ]]; }

# flows_not_ready: the flows whose Ready condition is not True, one "name (reason)" per line.
flows_not_ready() {
  kctl get integrationflows -n "$NAMESPACE" -o \
    jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.conditions[?(@.type=="Ready")].status}{" "}{.status.conditions[?(@.type=="Ready")].reason}{"\n"}{end}' |
    awk '$2 != "True" { printf "%s (%s)\n", $1, ($3 == "" ? "no status yet" : $3) }'
  local have
  have=$(kctl get integrationflows -n "$NAMESPACE" -o name | wc -l)
  ((have == ${#FLOWS[@]})) || echo "only $have of ${#FLOWS[@]} flows exist"
}

summary() {
  local report_rc=$1 not_ready=$2 ok=1 line
  log "summary after $(elapsed_since "$_START_SECONDS"):"
  local verdict_line
  verdict_line=$(grep -E '^(All [0-9]+ injected events|NOT ACCOUNTED)' "$DEMO_DIR/report.txt" || true)
  log "  ${verdict_line:-no verdict: the report did not finish (see above)}"
  if [[ -n $not_ready ]]; then
    ok=0
    log "  flows not Ready:"
    while IFS= read -r line; do log "    $line"; done <<<"$not_ready"
  else
    log "  all ${#FLOWS[@]} flows Ready"
  fi
  ((report_rc == 0)) || ok=0
  log "  logs: $DEMO_LOG_DIR   ledger: $LEDGER   verdict: $VERDICT"
  log "  the demo keeps running; inspect it with: kubectl --kubeconfig $KUBECONFIG_PATH get millrace -n $NAMESPACE"
  log "  stop it with: make demo-down"
  if ((ok)); then
    log "DEMO PASSED"
  else
    log "DEMO FAILED"
    exit 1
  fi
}

main "$@"
