#!/usr/bin/env bash
# Builds (once) and starts the local environment: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok with one fake node, and RabbitMQ; then installs the Millrace CRDs.
#
# Idempotent: what already runs is left alone, what is gone (a stale pid file) is started again.
# Binaries are cached in $MILLRACE_HOME/bin, state and logs live in $MILLRACE_HOME/env.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$HACK_DIR")"
# shellcheck source=hack/build.sh
source "$HACK_DIR/build.sh"

TOTAL_STEPS=11
STARTED=() # components this run started, for the summary

# --- processes ---------------------------------------------------------------------------------------

# start_component NAME ARGS...: start $BIN_DIR/NAME detached (own session, no stdin) and record its pid.
start_component() {
  local name=$1
  shift
  mkdir -p "$RUN_DIR" "$LOG_DIR"
  setsid "$BIN_DIR/$name" "$@" </dev/null >>"$LOG_DIR/$name.log" 2>&1 9>&- &
  echo $! >"$(pid_file "$name")"
  STARTED+=("$name")
}

# wait_until LABEL TIMEOUT_SECONDS NAME CMD...: poll CMD once a second until it succeeds. Fails early when the
# component NAME (if not "-") has exited, showing its log.
wait_until() {
  local label=$1 timeout=$2 name=$3
  shift 3
  local started=$SECONDS
  until "$@" >/dev/null 2>&1; do
    if [[ $name != - ]] && ! component_pid "$name" >/dev/null; then
      warn "$name exited while waiting for $label; last lines of $LOG_DIR/$name.log:"
      tail -n 30 "$LOG_DIR/$name.log" >&2 || true
      exit 1
    fi
    if ((SECONDS - started >= timeout)); then
      warn "timed out after ${timeout}s waiting for $label"
      [[ $name == - ]] || tail -n 30 "$LOG_DIR/$name.log" >&2 || true
      exit 1
    fi
    sleep 1
  done
}

# ensure_component NAME HEALTH_LABEL TIMEOUT START_FUNCTION HEALTH_CMD...
ensure_component() {
  local name=$1 label=$2 timeout=$3 start_fn=$4
  shift 4
  local pid
  if pid=$(component_pid "$name"); then
    log "    $name already running (pid $pid)"
  else
    [[ -f $(pid_file "$name") ]] && log "    $name: stale pid file, process gone; starting it again"
    "$start_fn"
    log "    started $name (pid $(<"$(pid_file "$name")"), log: $LOG_DIR/$name.log)"
  fi
  wait_until "$label" "$timeout" "$name" "$@"
}

# --- PKI ---------------------------------------------------------------------------------------------

# issue_cert NAME SUBJECT EXT [DIR]: a key and a certificate signed by the CA in DIR (default: the
# environment's CA in $PKI_DIR).
issue_cert() {
  local name=$1 subject=$2 ext=$3 dir=${4:-$PKI_DIR}
  openssl req -new -newkey rsa:2048 -nodes -keyout "$dir/$name.key" -subj "$subject" \
    -out "$dir/$name.csr" 2>/dev/null
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 3650 -extfile <(printf '%s\n' "$ext") -out "$dir/$name.crt" 2>/dev/null
  rm -f "$dir/$name.csr"
}

# make_ca DIR CN: a CA key and a self-signed CA certificate in DIR.
make_ca() {
  openssl req -x509 -new -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
    -keyout "$1/ca.key" -out "$1/ca.crt" 2>/dev/null
}

# ensure_pki: a CA, the apiserver's serving certificate, client certificates (the admin is in
# system:masters; the controller manager and scheduler get their built-in RBAC identities) and the
# service-account signing key pair. Made once; a complete set is reused.
ensure_pki() {
  if [[ -f $PKI_DIR/complete ]]; then
    log "    reusing the certificates in $PKI_DIR"
    return 0
  fi
  rm -rf "$PKI_DIR"
  mkdir -p "$PKI_DIR"
  chmod 700 "$PKI_DIR"
  make_ca "$PKI_DIR" millrace-local-ca
  local client="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
  issue_cert apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  issue_cert admin "/O=system:masters/CN=millrace-admin" "$client"
  issue_cert kube-controller-manager "/CN=system:kube-controller-manager" "$client"
  issue_cert kube-scheduler "/CN=system:kube-scheduler" "$client"
  openssl genrsa -out "$PKI_DIR/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI_DIR/sa.key" -pubout -out "$PKI_DIR/sa.pub" 2>/dev/null
  touch "$PKI_DIR/complete"
  log "    made a CA, serving and client certificates, and service-account keys in $PKI_DIR"
}

# write_kubeconfig FILE USER: a self-contained kubeconfig (certificates embedded) for a client identity.
write_kubeconfig() {
  local file=$1 user=$2 tmp
  tmp="$file.tmp"
  rm -f "$tmp"
  kubectl config --kubeconfig "$tmp" set-cluster millrace-local --server "https://127.0.0.1:$APISERVER_PORT" \
    --certificate-authority "$PKI_DIR/ca.crt" --embed-certs >/dev/null
  kubectl config --kubeconfig "$tmp" set-credentials "$user" --client-certificate "$PKI_DIR/$user.crt" \
    --client-key "$PKI_DIR/$user.key" --embed-certs >/dev/null
  kubectl config --kubeconfig "$tmp" set-context millrace-local --cluster millrace-local --user "$user" >/dev/null
  kubectl config --kubeconfig "$tmp" use-context millrace-local >/dev/null
  chmod 600 "$tmp"
  mv "$tmp" "$file"
}

# ensure_kubeconfig FILE USER: write it unless it exists and is newer than the certificates.
ensure_kubeconfig() {
  [[ -f $1 && $1 -nt $PKI_DIR/complete ]] || write_kubeconfig "$1" "$2"
}

# --- components --------------------------------------------------------------------------------------

start_etcd() {
  mkdir -p "$ENV_DIR/etcd"
  chmod 700 "$ENV_DIR/etcd"
  start_component etcd --name millrace --data-dir "$ENV_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "millrace=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --log-level warn
}

etcd_healthy() { curl -fsS "http://127.0.0.1:$ETCD_CLIENT_PORT/health" | grep -q '"health":"true"'; }

# The advertise address must be loopback here, which the default endpoint reconciler refuses; nothing in
# this environment needs endpoints for the "kubernetes" Service, so it is turned off.
start_apiserver() {
  start_component kube-apiserver \
    --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --endpoint-reconciler-type none \
    --tls-cert-file "$PKI_DIR/apiserver.crt" --tls-private-key-file "$PKI_DIR/apiserver.key" \
    --client-ca-file "$PKI_DIR/ca.crt" \
    --authorization-mode RBAC \
    --service-cluster-ip-range 10.0.0.0/24 \
    --allow-privileged=true \
    --service-account-issuer "https://127.0.0.1:$APISERVER_PORT" \
    --service-account-key-file "$PKI_DIR/sa.pub" \
    --service-account-signing-key-file "$PKI_DIR/sa.key"
}

apiserver_ready() { kctl get --raw /readyz | grep -qx ok; }

# Each controller runs as its own service account, the way the built-in RBAC roles expect.
start_controller_manager() {
  local kc="$ENV_DIR/kube-controller-manager.kubeconfig"
  start_component kube-controller-manager \
    --kubeconfig "$kc" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" \
    --leader-elect=false --use-service-account-credentials \
    --service-account-private-key-file "$PKI_DIR/sa.key" --root-ca-file "$PKI_DIR/ca.crt" \
    --cluster-signing-cert-file "$PKI_DIR/ca.crt" --cluster-signing-key-file "$PKI_DIR/ca.key"
}

start_scheduler() {
  local kc="$ENV_DIR/kube-scheduler.kubeconfig"
  start_component kube-scheduler \
    --kubeconfig "$kc" --authentication-kubeconfig "$kc" --authorization-kubeconfig "$kc" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" \
    --leader-elect=false
}

# healthz PORT: the /healthz of a component's secure port (self-signed serving certificate).
healthz() { curl -fsSk "https://127.0.0.1:$1/healthz" | grep -qx ok; }

start_kwok() {
  start_component kwok --kubeconfig "$KUBECONFIG_PATH" \
    --config "$BIN_DIR/kwok-stages-$KWOK_VERSION.yaml" \
    --node-lease-duration-seconds 40 \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-ip 10.0.1.1 --cidr 10.0.1.0/24 \
    --server-address "127.0.0.1:$KWOK_PORT"
}

kwok_healthy() { curl -fsS "http://127.0.0.1:$KWOK_PORT/healthz" >/dev/null; }

# ensure_kwok_node: the one fake node, untainted so that any workload pod may land there.
ensure_kwok_node() {
  kctl apply --server-side --field-manager millrace-env -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $KWOK_NODE_NAME
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: $KWOK_NODE_NAME
    kubernetes.io/os: linux
    kubernetes.io/role: agent
    node-role.kubernetes.io/agent: ""
    type: kwok
status:
  allocatable:
    cpu: "32"
    memory: 256Gi
    pods: "110"
  capacity:
    cpu: "32"
    memory: 256Gi
    pods: "110"
EOF
}

node_ready() {
  [[ $(kctl get node "$KWOK_NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}

# --- RabbitMQ ----------------------------------------------------------------------------------------

RABBITMQ_MARKER="# Written by Millrace's hack/env-up.sh"
RABBITMQ_CONF=/etc/rabbitmq/rabbitmq.conf
# Where RabbitMQ reads its TLS files: a directory of its own, since it runs as the rabbitmq user, who cannot
# read $MILLRACE_HOME.
RABBITMQ_TLS_INSTALL_DIR=/etc/rabbitmq/tls

# as_root CMD...: run CMD as root. The env lock's fd is closed, since RabbitMQ's tools may leave daemons
# (epmd) behind.
as_root() {
  if [[ $(id -u) == 0 ]]; then "$@" 9>&-; else sudo -n "$@" 9>&-; fi
}

install_rabbitmq() {
  if command -v rabbitmq-server >/dev/null && command -v rabbitmqctl >/dev/null; then
    log "    rabbitmq-server $(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null || echo '?') is installed"
    return 0
  fi
  log "    installing rabbitmq-server from Debian (log: $BUILD_DIR/apt-rabbitmq.log)"
  mkdir -p "$BUILD_DIR"
  run_with_heartbeat "apt-get install rabbitmq-server" "$BUILD_DIR/apt-rabbitmq.log" \
    as_root env DEBIAN_FRONTEND=noninteractive bash -c \
    'apt-get update -q && apt-get install -y -q --no-install-recommends rabbitmq-server'
}

# ensure_rabbitmq_tls_pki: a private CA and a server certificate for RabbitMQ's TLS listener, in
# $RABBITMQ_TLS_DIR. Made once; a complete set is reused. The certificate names $RABBITMQ_TLS_SERVER_NAME and
# localhost but not 127.0.0.1, so that a client connecting to 127.0.0.1 must be told which name to verify.
ensure_rabbitmq_tls_pki() {
  if [[ -f $RABBITMQ_TLS_DIR/complete ]]; then
    log "    reusing RabbitMQ's TLS certificates in $RABBITMQ_TLS_DIR"
    return 0
  fi
  rm -rf "$RABBITMQ_TLS_DIR"
  mkdir -p "$RABBITMQ_TLS_DIR"
  chmod 700 "$RABBITMQ_TLS_DIR"
  make_ca "$RABBITMQ_TLS_DIR" millrace-local-rabbitmq-ca
  issue_cert server "/CN=$RABBITMQ_TLS_SERVER_NAME" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:$RABBITMQ_TLS_SERVER_NAME,DNS:localhost" "$RABBITMQ_TLS_DIR"
  rm -f "$RABBITMQ_TLS_DIR/ca.srl"
  touch "$RABBITMQ_TLS_DIR/complete"
  log "    made a CA and a server certificate for RabbitMQ's TLS listener in $RABBITMQ_TLS_DIR"
}

# install_rabbitmq_tls: copy the listener's CA, certificate and key to where RabbitMQ reads them. Prints
# "changed" when what was there differed (a running node then needs a restart to use them).
install_rabbitmq_tls() {
  local f changed=
  as_root install -d -m 750 -o rabbitmq -g rabbitmq "$RABBITMQ_TLS_INSTALL_DIR"
  for f in ca.crt server.crt server.key; do
    if ! as_root cmp -s "$RABBITMQ_TLS_DIR/$f" "$RABBITMQ_TLS_INSTALL_DIR/$f"; then
      as_root install -m 640 -o rabbitmq -g rabbitmq "$RABBITMQ_TLS_DIR/$f" "$RABBITMQ_TLS_INSTALL_DIR/$f"
      changed=changed
    fi
  done
  echo "$changed"
}

# rabbitmq_conf_is_ours: the configuration file is absent or was written by env-up.
rabbitmq_conf_is_ours() { [[ ! -s $RABBITMQ_CONF ]] || grep -qF "$RABBITMQ_MARKER" "$RABBITMQ_CONF"; }

# configure_rabbitmq: listeners on loopback only (AMQP, AMQP over TLS, management, streams), and the plugins
# Millrace needs, enabled offline. A configuration file that Millrace did not write is left alone.
configure_rabbitmq() {
  local conf=$RABBITMQ_CONF env_conf=/etc/rabbitmq/rabbitmq-env.conf
  if rabbitmq_conf_is_ours; then
    as_root tee "$conf" >/dev/null <<EOF
$RABBITMQ_MARKER: listen on loopback only.
listeners.tcp.default = 127.0.0.1:$RABBITMQ_AMQP_PORT
listeners.ssl.default = 127.0.0.1:$RABBITMQ_AMQPS_PORT
ssl_options.cacertfile = $RABBITMQ_TLS_INSTALL_DIR/ca.crt
ssl_options.certfile = $RABBITMQ_TLS_INSTALL_DIR/server.crt
ssl_options.keyfile = $RABBITMQ_TLS_INSTALL_DIR/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
management.tcp.ip = 127.0.0.1
management.tcp.port = $RABBITMQ_MGMT_PORT
stream.listeners.tcp.default = 127.0.0.1:$RABBITMQ_STREAM_PORT
EOF
  else
    warn "$conf was not written by Millrace; leaving it as it is"
  fi
  if [[ ! -s $env_conf ]] || grep -qF "$RABBITMQ_MARKER" "$env_conf" ||
    [[ $(grep -cvE '^\s*(#|$)' "$env_conf") == 0 ]]; then
    as_root tee "$env_conf" >/dev/null <<EOF
$RABBITMQ_MARKER: Erlang distribution on loopback only.
ERL_EPMD_ADDRESS=127.0.0.1
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
EOF
  fi
  as_root rabbitmq-plugins enable --offline rabbitmq_management rabbitmq_stream \
    rabbitmq_consistent_hash_exchange >/dev/null
}

# rabbitmq_up: the management API answers. Cheaper than rabbitmqctl, which boots an Erlang VM per call.
rabbitmq_up() {
  curl -fsS -o /dev/null -u guest:guest "http://127.0.0.1:$RABBITMQ_MGMT_PORT/api/overview" 2>/dev/null
}

# amqp_answers: the AMQP listener answers a protocol header with a Connection.Start frame (type 1). A node
# whose management API answers can still have a stuck AMQP listener, for example after a client flooded it.
amqp_answers() {
  local first
  first=$(timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$RABBITMQ_AMQP_PORT && printf 'AMQP\\x00\\x00\\x09\\x01' >&3 &&
    head -c 1 <&3 | od -An -tx1" 2>/dev/null) || return 1
  [[ ${first// /} == 01 ]]
}

# amqps_answers: the TLS listener completes a handshake with a certificate that the private CA signs.
amqps_answers() {
  timeout 5 openssl s_client -connect "127.0.0.1:$RABBITMQ_AMQPS_PORT" -servername "$RABBITMQ_TLS_SERVER_NAME" \
    -CAfile "$RABBITMQ_TLS_DIR/ca.crt" -verify_return_error -brief </dev/null >/dev/null 2>&1 9>&-
}

# stop_rabbitmq_node PID: stop the node env-up started, by rabbitmqctl, or by signal if that fails.
stop_rabbitmq_node() {
  local pid=$1 waited=0
  timeout 60 rabbitmqctl -q stop >/dev/null 2>&1 9>&- || true
  kill -TERM "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null && ((waited < 30)); do
    sleep 1
    waited=$((waited + 1))
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$(pid_file rabbitmq)"
}

# rabbitmq_os_pid: the pid of the running node, as its management API reports it.
rabbitmq_os_pid() {
  curl -fsS -u guest:guest "http://127.0.0.1:$RABBITMQ_MGMT_PORT/api/nodes?columns=os_pid" 2>/dev/null |
    sed -n 's/.*"os_pid":"\([0-9]*\)".*/\1/p'
}

record_rabbitmq_pid() {
  local pid
  pid=$(rabbitmq_os_pid)
  [[ -n $pid ]] && echo "$pid" >"$(pid_file rabbitmq)"
}

# ensure_rabbitmq: start the node detached unless one already runs. Only a node started here gets a pid
# file, so env-down stops only that one.
ensure_rabbitmq() {
  install_rabbitmq
  ensure_rabbitmq_tls_pki
  local pid tls_changed
  tls_changed=$(install_rabbitmq_tls)
  if rabbitmq_up && ! amqp_answers; then
    if pid=$(rabbitmq_pid); then
      warn "rabbitmq (pid $pid) answers HTTP but not AMQP on :$RABBITMQ_AMQP_PORT; restarting it"
      stop_rabbitmq_node "$pid"
    else
      die "the running RabbitMQ answers HTTP but not AMQP on :$RABBITMQ_AMQP_PORT, and env-up did not start it"
    fi
  fi
  if rabbitmq_up; then
    if pid=$(rabbitmq_pid); then
      log "    rabbitmq already running (pid $pid)"
    elif [[ -f $(pid_file rabbitmq) ]]; then
      # env-up started a node here before, and it has been restarted since: it is still ours to stop.
      wait_until "RabbitMQ's pid" 30 - record_rabbitmq_pid
      log "    rabbitmq was restarted since env-up started it; now pid $(<"$(pid_file rabbitmq)")"
    else
      log "    rabbitmq already running, not started by env-up; using it and leaving it to its owner"
      amqps_answers || warn "that RabbitMQ has no TLS listener on :$RABBITMQ_AMQPS_PORT with the CA in" \
        "$RABBITMQ_TLS_DIR; the TLS tests will fail"
      return 0
    fi
    if [[ -z $tls_changed ]] && amqps_answers; then
      log "    rabbitmq's TLS listener answers on :$RABBITMQ_AMQPS_PORT"
      return 0
    fi
    # Started before env-up configured TLS, or its certificates were made again since: a node reads its
    # configuration and certificates when it boots.
    if ! rabbitmq_conf_is_ours; then
      warn "$RABBITMQ_CONF was not written by Millrace, and RabbitMQ has no TLS listener on" \
        ":$RABBITMQ_AMQPS_PORT with the CA in $RABBITMQ_TLS_DIR; the TLS tests will fail"
      return 0
    fi
    log "    rabbitmq has no TLS listener on :$RABBITMQ_AMQPS_PORT with the current certificates; restarting it"
    stop_rabbitmq_node "$(<"$(pid_file rabbitmq)")"
  fi
  if pid=$(rabbitmq_pid); then
    # Our node's VM is alive but does not answer: still booting, or its app was stopped (stop_app).
    log "    rabbitmq (pid $pid) is alive but not answering; waiting for it"
    wait_until "RabbitMQ to answer" 180 - rabbitmq_up
    return 0
  fi
  # Configure before the first rabbitmqctl call: that call may start epmd, which must bind loopback too.
  configure_rabbitmq
  mkdir -p "$RUN_DIR"
  rm -f "$(pid_file rabbitmq)"
  as_root rabbitmq-server -detached >/dev/null 2>&1
  wait_until "RabbitMQ to start" 300 - as_root rabbitmqctl -q await_startup --timeout 10
  wait_until "RabbitMQ's management API" 60 - rabbitmq_up
  wait_until "RabbitMQ's AMQP listener" 60 - amqp_answers
  wait_until "RabbitMQ's TLS listener" 60 - amqps_answers
  wait_until "RabbitMQ's pid" 30 - record_rabbitmq_pid
  STARTED+=(rabbitmq)
  log "    started rabbitmq (pid $(<"$(pid_file rabbitmq)"), logs in /var/log/rabbitmq)"
}

# --- CRDs --------------------------------------------------------------------------------------------

install_crds() {
  local dir="$REPO_DIR/crds/yaml"
  shopt -s nullglob
  local files=("$dir"/*.yaml)
  shopt -u nullglob
  if ((${#files[@]} == 0)); then
    log "    no CRD manifests in crds/yaml yet; skipping"
    return 0
  fi
  # Skip the apply when these exact manifests were applied before and their CRDs are all there.
  local digest names stamp="$ENV_DIR/crds.applied"
  digest=$(cat "${files[@]}" | sha256sum | cut -d' ' -f1)
  if [[ -f $stamp && $(head -n 1 "$stamp") == "$digest" ]]; then
    names=$(tail -n +2 "$stamp")
    # shellcheck disable=SC2086 # one argument per CRD name
    if kctl get $names >/dev/null 2>&1; then
      log "    $(wc -w <<<"$names") CRDs unchanged since the last apply"
      return 0
    fi
  fi
  names=$(kctl apply --server-side --force-conflicts --field-manager millrace-env -f "$dir" -o name)
  # shellcheck disable=SC2086 # one argument per CRD name
  kctl wait --for condition=Established --timeout 60s $names >/dev/null
  printf '%s\n%s\n' "$digest" "$names" >"$stamp"
  log "    $(wc -w <<<"$names") CRDs applied and Established"
}

# --- main --------------------------------------------------------------------------------------------

main() {
  log "Millrace local environment: MILLRACE_HOME=$MILLRACE_HOME"
  mkdir -p "$ENV_DIR" "$RUN_DIR" "$LOG_DIR"
  hold_env_lock

  step 1 $TOTAL_STEPS "building etcd"
  ensure_built etcd "$ETCD_VERSION" build_etcd etcd
  step 2 $TOTAL_STEPS "building kube-apiserver, kube-controller-manager, kube-scheduler"
  ensure_built "kube-apiserver, kube-controller-manager, kube-scheduler" "$KUBE_VERSION" build_kube \
    kube-apiserver kube-controller-manager kube-scheduler
  step 3 $TOTAL_STEPS "building kwok"
  ensure_built kwok "$KWOK_VERSION" build_kwok kwok
  ensure_kwok_stages
  step 4 $TOTAL_STEPS "building helm"
  ensure_built helm "$HELM_VERSION" build_helm helm

  step 5 $TOTAL_STEPS "RabbitMQ"
  ensure_rabbitmq

  step 6 $TOTAL_STEPS "certificates and kubeconfigs"
  ensure_pki
  ensure_kubeconfig "$KUBECONFIG_PATH" admin
  ensure_kubeconfig "$ENV_DIR/kube-controller-manager.kubeconfig" kube-controller-manager
  ensure_kubeconfig "$ENV_DIR/kube-scheduler.kubeconfig" kube-scheduler

  step 7 $TOTAL_STEPS "etcd on 127.0.0.1:$ETCD_CLIENT_PORT"
  ensure_component etcd "etcd to be healthy" 60 start_etcd etcd_healthy

  step 8 $TOTAL_STEPS "kube-apiserver on https://127.0.0.1:$APISERVER_PORT"
  ensure_component kube-apiserver "kube-apiserver /readyz" 120 start_apiserver apiserver_ready

  step 9 $TOTAL_STEPS "kube-controller-manager and kube-scheduler"
  ensure_component kube-controller-manager "kube-controller-manager /healthz" 60 start_controller_manager \
    healthz "$KCM_PORT"
  ensure_component kube-scheduler "kube-scheduler /healthz" 60 start_scheduler healthz "$SCHEDULER_PORT"

  step 10 $TOTAL_STEPS "kwok and its node $KWOK_NODE_NAME"
  ensure_component kwok "kwok /healthz" 60 start_kwok kwok_healthy
  if node_ready; then
    log "    node $KWOK_NODE_NAME is Ready"
  else
    ensure_kwok_node
    wait_until "node $KWOK_NODE_NAME to be Ready" 60 kwok node_ready
  fi

  step 11 $TOTAL_STEPS "Millrace CRDs"
  install_crds

  log "environment up in $(elapsed_since "$_START_SECONDS")${STARTED[*]:+; started: ${STARTED[*]}}"
  log "  kubeconfig:  $KUBECONFIG_PATH   (kubectl --kubeconfig \"\$(make -s env-kubeconfig)\" get nodes)"
  log "  apiserver:   https://127.0.0.1:$APISERVER_PORT    etcd: http://127.0.0.1:$ETCD_CLIENT_PORT"
  log "  rabbitmq:    amqp://guest:guest@127.0.0.1:$RABBITMQ_AMQP_PORT  management: http://127.0.0.1:$RABBITMQ_MGMT_PORT"
  log "               amqps://guest:guest@127.0.0.1:$RABBITMQ_AMQPS_PORT  (CA: $RABBITMQ_TLS_DIR/ca.crt, certificate" \
    "for $RABBITMQ_TLS_SERVER_NAME and localhost)"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
