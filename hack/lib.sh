# shellcheck shell=bash disable=SC2034 # the settings here are used by the scripts that source this file
# Shared settings and helpers for the local-environment scripts (env-up, env-down, env-status).
# Source it; it sets no shell options of its own.

MILLRACE_HOME="${MILLRACE_HOME:-$HOME/.cache/millrace}"
export MILLRACE_HOME

# Everything the environment builds or writes lives outside the checkout.
BIN_DIR="$MILLRACE_HOME/bin"       # built binaries and their version stamps
BUILD_DIR="$MILLRACE_HOME/build"   # generated wrapper Go modules and build logs
ENV_DIR="$MILLRACE_HOME/env"       # runtime state: pki, etcd data, pid files, logs, kubeconfig
PKI_DIR="$ENV_DIR/pki"
RABBITMQ_TLS_DIR="$ENV_DIR/rabbitmq-tls" # the private CA (ca.crt) and server certificate of RabbitMQ's TLS listener
RUN_DIR="$ENV_DIR/run"             # pid files
LOG_DIR="$ENV_DIR/logs"
KUBECONFIG_PATH="$ENV_DIR/kubeconfig"

# Versions. Kubernetes is the newest minor that builds with Go 1.26 and that k8s-openapi 0.29 supports.
ETCD_VERSION="v3.6.16"
KUBE_VERSION="v1.37.2"
KWOK_VERSION="v0.8.0"
HELM_VERSION="v3.22.0"

# Ports, all on 127.0.0.1. etcd avoids its default 2379/2380 so that it cannot clash with another etcd.
ETCD_CLIENT_PORT=12379
ETCD_PEER_PORT=12380
APISERVER_PORT=16443
KCM_PORT=10357          # kube-controller-manager secure port (health); not the default 10257
SCHEDULER_PORT=10359    # kube-scheduler secure port (health); not the default 10259
KWOK_PORT=10347         # kwok health and metrics
RABBITMQ_AMQP_PORT=5672
RABBITMQ_MGMT_PORT=15672
RABBITMQ_STREAM_PORT=5552
RABBITMQ_AMQPS_PORT=5671 # AMQP over TLS, with a certificate from the private CA in $RABBITMQ_TLS_DIR
# The name in that certificate besides localhost (127.0.0.1 is not in it): connect to 127.0.0.1 and verify this name.
RABBITMQ_TLS_SERVER_NAME="rabbitmq.millrace.test"

# The fake node that kwok manages; Deployment pods are scheduled there and turn Running/Ready.
KWOK_NODE_NAME="kwok-node-0"

# The components env-up starts, in start order. RabbitMQ is handled apart (it daemonizes itself).
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

_START_SECONDS=$SECONDS

# elapsed_since SECONDS -> "1m05s"
elapsed_since() {
  local d=$((SECONDS - $1))
  if ((d >= 60)); then printf '%dm%02ds' $((d / 60)) $((d % 60)); else printf '%ds' "$d"; fi
}

log() { printf '%s [%s] %s\n' "$(date +%H:%M:%S)" "$(elapsed_since "$_START_SECONDS")" "$*"; }
warn() { log "WARNING: $*" >&2; }
die() {
  log "ERROR: $*" >&2
  exit 1
}

# step N TOTAL MESSAGE: announce one step of a longer procedure.
step() {
  local n=$1 total=$2
  shift 2
  log "[$n/$total] $*"
}

# run_with_heartbeat LABEL LOGFILE CMD...: run CMD with its output in LOGFILE, printing a line every
# 30 seconds so that a long build never leaves a silent terminal. On failure, show the log's tail.
run_with_heartbeat() {
  local label=$1 logfile=$2
  shift 2
  local started=$SECONDS
  "$@" >"$logfile" 2>&1 &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    local waited=0
    while ((waited < 30)) && kill -0 "$pid" 2>/dev/null; do
      sleep 1
      waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
      local last
      last=$(tail -n 1 "$logfile" 2>/dev/null | cut -c1-100)
      log "    ... $label: $(elapsed_since "$started") so far, $(wc -l <"$logfile") lines of output${last:+, last: $last}"
    fi
  done
  if ! wait "$pid"; then
    warn "$label failed after $(elapsed_since "$started"); last lines of $logfile:"
    tail -n 30 "$logfile" >&2
    return 1
  fi
  log "    $label done in $(elapsed_since "$started")"
}

# hold_env_lock: one env-up or env-down at a time (several `make test` may start together); the lock is
# released when the script exits. It is held on fd 9, which every process the scripts start must close
# (`9>&-`), or the lock would live as long as the daemons.
hold_env_lock() {
  mkdir -p "$ENV_DIR"
  exec 9>"$ENV_DIR/env.lock"
  if ! flock -n 9; then
    log "another env-up or env-down is running; waiting for it"
    flock 9
  fi
}

pid_file() { echo "$RUN_DIR/$1.pid"; }

# component_pid NAME: print the pid of a running component started by env-up, or fail.
# A pid file is trusted only if that process is alive and still runs the expected binary,
# so stale pid files (the process died, or the pid was reused) are ignored.
component_pid() {
  local name=$1 file pid exe
  file=$(pid_file "$name")
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ $exe == "$BIN_DIR/$name" || $exe == "$BIN_DIR/$name (deleted)" ]] || return 1
  echo "$pid"
}

# rabbitmq_pid: print the pid of the RabbitMQ node env-up started, or fail.
rabbitmq_pid() {
  local file pid
  file=$(pid_file rabbitmq)
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  grep -q beam "/proc/$pid/comm" 2>/dev/null || return 1
  echo "$pid"
}

# kubectl against the local environment.
kctl() { kubectl --kubeconfig "$KUBECONFIG_PATH" "$@"; }
