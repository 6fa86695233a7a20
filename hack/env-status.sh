#!/usr/bin/env bash
# Shows what the local environment runs (pid, alive or not), the versions and the endpoints.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

endpoint() {
  case $1 in
    etcd) echo "http://127.0.0.1:$ETCD_CLIENT_PORT (peer :$ETCD_PEER_PORT)" ;;
    kube-apiserver) echo "https://127.0.0.1:$APISERVER_PORT" ;;
    kube-controller-manager) echo "https://127.0.0.1:$KCM_PORT/healthz" ;;
    kube-scheduler) echo "https://127.0.0.1:$SCHEDULER_PORT/healthz" ;;
    kwok) echo "http://127.0.0.1:$KWOK_PORT/healthz (node $KWOK_NODE_NAME)" ;;
  esac
}

built_version() {
  if [[ -f $BIN_DIR/.$1.version ]]; then cat "$BIN_DIR/.$1.version"; else echo "not built"; fi
}

# status NAME PID_OR_EMPTY: "running (pid N)", "stopped (stale pid file)" or "stopped".
status() {
  local name=$1 pid=$2
  if [[ -n $pid ]]; then
    echo "running (pid $pid)"
  elif [[ -f $(pid_file "$name") ]]; then
    echo "stopped (stale pid file)"
  else
    echo "stopped"
  fi
}

printf '%-24s %-26s %-10s %s\n' COMPONENT STATE VERSION ENDPOINT
for name in "${COMPONENTS[@]}"; do
  pid=$(component_pid "$name" || true)
  printf '%-24s %-26s %-10s %s\n' "$name" "$(status "$name" "$pid")" "$(built_version "$name")" "$(endpoint "$name")"
done

rabbit_state=stopped
rabbit_version=$(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null | cut -d- -f1 || true)
if pid=$(rabbitmq_pid); then
  rabbit_state="running (pid $pid)"
elif curl -fsS -o /dev/null -u guest:guest "http://127.0.0.1:$RABBITMQ_MGMT_PORT/api/overview" 2>/dev/null; then
  rabbit_state="running (not env-up's)"
elif [[ -f $(pid_file rabbitmq) ]]; then
  rabbit_state="stopped (stale pid file)"
fi
printf '%-24s %-26s %-10s %s\n' rabbitmq "$rabbit_state" "${rabbit_version:-absent}" \
  "amqp://127.0.0.1:$RABBITMQ_AMQP_PORT, amqps://127.0.0.1:$RABBITMQ_AMQPS_PORT, http://127.0.0.1:$RABBITMQ_MGMT_PORT, stream :$RABBITMQ_STREAM_PORT"
printf '%-24s %-26s %-10s %s\n' helm "-" "$(built_version helm)" "$BIN_DIR/helm"

echo
echo "kubeconfig: $KUBECONFIG_PATH"
if [[ -f $KUBECONFIG_PATH ]] && server=$(kctl version -o json 2>/dev/null | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -n 1) &&
  [[ -n $server ]]; then
  echo "server:     $server, /readyz $(kctl get --raw /readyz 2>/dev/null || echo 'not ready')"
  kctl get nodes --no-headers 2>/dev/null | awk '{printf "node:       %s %s\n", $1, $2}'
  crds=$(kctl get crd -o name 2>/dev/null | grep -c 'millrace' || true)
  echo "CRDs:       $crds Millrace CRDs installed"
else
  echo "server:     not reachable (run 'make env-up')"
fi
if [[ -f $RABBITMQ_TLS_DIR/complete ]]; then
  echo "amqps CA:   $RABBITMQ_TLS_DIR/ca.crt (RabbitMQ's certificate is for $RABBITMQ_TLS_SERVER_NAME and localhost)"
else
  echo "amqps CA:   not made yet (run 'make env-up')"
fi
echo "logs:       $LOG_DIR (RabbitMQ: /var/log/rabbitmq)"
