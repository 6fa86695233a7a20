#!/usr/bin/env bash
# `make demo-down`: stop what `make demo` started and delete the scenario's namespace. The local
# environment (control plane, RabbitMQ) keeps running; `make env-down` stops it.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/demo-lib.sh
source "$HACK_DIR/demo-lib.sh"

log "stopping the Millrace demo"
log "[1/3] stopping the workers (they drain in-flight events first)"
stop_workers
log "[2/3] deleting namespace $NAMESPACE (the operator removes the flows' queues)"
if [[ -s $KUBECONFIG_PATH ]] && kctl get --raw /readyz >/dev/null 2>&1; then
  delete_scenario_namespace || warn "continuing; delete it later with: kubectl delete namespace $NAMESPACE"
else
  log "    the local control plane is not running; nothing to delete"
fi
log "[3/3] stopping the operator and the partner simulators"
stop_one operator 15
stop_one partners 10
log "demo stopped in $(elapsed_since "$_START_SECONDS"); logs kept in $DEMO_LOG_DIR"
