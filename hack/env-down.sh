#!/usr/bin/env bash
# Stops what env-up started, found through its pid files, and keeps the caches and state
# ($MILLRACE_HOME/bin, build and env). A RabbitMQ node that env-up did not start is left running.
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# stop_pid NAME PID: SIGTERM, then SIGKILL if the process is still there after 20 seconds.
stop_pid() {
  local name=$1 pid=$2 waited=0
  kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null; do
    if ((waited >= 100)); then
      warn "$name (pid $pid) ignored SIGTERM for 20s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
  log "stopped $name (pid $pid)"
}

stop_components() {
  local i name pid
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    name=${COMPONENTS[i]}
    if pid=$(component_pid "$name"); then
      stop_pid "$name" "$pid"
    elif [[ -f $(pid_file "$name") ]]; then
      log "$name was not running (stale pid file)"
    fi
    rm -f "$(pid_file "$name")"
  done
}

stop_rabbitmq() {
  local file pid
  file=$(pid_file rabbitmq)
  [[ -f $file ]] || return 0
  if pid=$(rabbitmq_pid); then
    if timeout 60 rabbitmqctl -q stop >/dev/null 2>&1 9>&-; then
      local waited=0
      while kill -0 "$pid" 2>/dev/null && ((waited < 30)); do
        sleep 1
        waited=$((waited + 1))
      done
    else
      warn "rabbitmqctl stop failed"
    fi
    # stop_pid is a no-op when the node is gone already, and escalates when it is not.
    stop_pid rabbitmq "$pid"
    log "stopped rabbitmq (pid $pid)"
  else
    log "rabbitmq was not running (stale pid file)"
  fi
  rm -f "$file"
  # The Erlang port mapper comes up with the node; stop it too unless another node still uses it.
  if command -v epmd >/dev/null && pgrep -x epmd >/dev/null; then
    if ! epmd -names 2>/dev/null | grep -q '^name '; then
      epmd -kill >/dev/null 2>&1 9>&- || true
      log "stopped epmd"
    fi
  fi
}

hold_env_lock
stop_components
stop_rabbitmq
log "environment down; caches kept in $MILLRACE_HOME"
