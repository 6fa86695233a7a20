#!/usr/bin/env bash
# Builds the local environment's binaries from the Go module proxy, once, into $MILLRACE_HOME/bin.
# Each binary has a version stamp next to it; a binary whose stamp matches is not rebuilt.
#
# Sourced by env-up.sh for its build steps; run directly to build everything:
#   hack/build.sh            # etcd, the Kubernetes control plane, kwok and helm
set -euo pipefail

# shellcheck source=hack/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Go settings common to every build: static binaries, no local paths baked in.
export CGO_ENABLED=0
GO_BUILD_FLAGS=(-trimpath -v)

# is_built VERSION NAME...: every named binary exists and was built at VERSION.
is_built() {
  local version=$1 name
  shift
  for name in "$@"; do
    [[ -x "$BIN_DIR/$name" && -f "$BIN_DIR/.$name.version" && "$(<"$BIN_DIR/.$name.version")" == "$version" ]] ||
      return 1
  done
}

stamp() { echo "$2" >"$BIN_DIR/.$1.version"; }

# new_wrapper_module DIR NAME: an empty main module in DIR, from which a dependency's commands are built.
# Building from our own module keeps each tool's dependency versions apart from the others'.
new_wrapper_module() {
  local dir=$1 name=$2
  rm -rf "$dir"
  mkdir -p "$dir"
  cat >"$dir/go.mod" <<EOF
module millrace.local/build/$name

go 1.26
EOF
}

# build_etcd: go.etcd.io/etcd/server/v3 is itself the etcd main package.
build_etcd() {
  local dir="$BUILD_DIR/etcd-$ETCD_VERSION"
  new_wrapper_module "$dir" etcd
  (
    cd "$dir"
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    go build "${GO_BUILD_FLAGS[@]}" -ldflags "-s -w" -o "$BIN_DIR/etcd" go.etcd.io/etcd/server/v3
  )
  stamp etcd "$ETCD_VERSION"
}

# kube_replaces: one `replace` line per module that k8s.io/kubernetes's go.mod requires at v0.0.0 (its staging
# modules, which it redirects to ./staging and which Go ignores outside the main module), pointed at the
# published v0.<minor>.<patch> release. The list comes from the downloaded go.mod, since it changes between minors.
kube_replaces() {
  local gomod staging_version
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [[ -f $gomod ]] || die "could not download the go.mod of k8s.io/kubernetes@$KUBE_VERSION"
  staging_version="v0.${KUBE_VERSION#v1.}"
  awk -v ver="$staging_version" '
    $1 == "require" && $2 == "(" { inreq = 1; next }
    inreq && $1 == ")" { inreq = 0; next }
    inreq && $2 == "v0.0.0" { printf "replace %s => %s %s\n", $1, $1, ver }
  ' "$gomod"
}

# build_kube: kube-apiserver, kube-controller-manager and kube-scheduler from one wrapper module.
build_kube() {
  local dir="$BUILD_DIR/kubernetes-$KUBE_VERSION" minor replaces
  local pkgs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
    k8s.io/kubernetes/cmd/kube-scheduler)
  minor=$(cut -d. -f2 <<<"$KUBE_VERSION")
  new_wrapper_module "$dir" kubernetes
  replaces=$(kube_replaces)
  [[ -n $replaces ]] || die "found no v0.0.0 requirements in k8s.io/kubernetes@$KUBE_VERSION's go.mod"
  printf '\n%s\n' "$replaces" >>"$dir/go.mod"
  (
    cd "$dir"
    go get "${pkgs[@]/%/@$KUBE_VERSION}"
    go build "${GO_BUILD_FLAGS[@]}" -o "$BIN_DIR/" -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
      -X k8s.io/component-base/version.gitMajor=1 \
      -X k8s.io/component-base/version.gitMinor=$minor \
      -X k8s.io/component-base/version.gitTreeState=clean" "${pkgs[@]}"
  )
  local b
  for b in kube-apiserver kube-controller-manager kube-scheduler; do stamp "$b" "$KUBE_VERSION"; done
}

build_kwok() {
  local dir="$BUILD_DIR/kwok-$KWOK_VERSION"
  new_wrapper_module "$dir" kwok
  (
    cd "$dir"
    go get "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
    go build "${GO_BUILD_FLAGS[@]}" -ldflags "-s -w" -o "$BIN_DIR/kwok" sigs.k8s.io/kwok/cmd/kwok
  )
  stamp kwok "$KWOK_VERSION"
}

# ensure_kwok_stages: kwok runs nothing without Stages. Take kwok's own "fast" node and pod stages and its
# lease-based node heartbeat from the module source, into one configuration file next to the binary.
ensure_kwok_stages() {
  local file="$BIN_DIR/kwok-stages-$KWOK_VERSION.yaml" dir stage
  [[ -s $file ]] && return 0
  dir=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -d $dir ]] || die "could not download sigs.k8s.io/kwok@$KWOK_VERSION"
  for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease \
    pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    echo "---"
    cat "$dir/kustomize/stage/$stage.yaml"
  done >"$file.tmp"
  mv "$file.tmp" "$file"
}

build_helm() {
  local dir="$BUILD_DIR/helm-$HELM_VERSION"
  new_wrapper_module "$dir" helm
  (
    cd "$dir"
    go get "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    go build "${GO_BUILD_FLAGS[@]}" -o "$BIN_DIR/helm" \
      -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" helm.sh/helm/v3/cmd/helm
  )
  stamp helm "$HELM_VERSION"
}

# ensure_built LABEL VERSION BUILD_FUNCTION NAME...: build unless the stamped binaries are already there.
ensure_built() {
  local label=$1 version=$2 fn=$3
  shift 3
  local name=$1
  mkdir -p "$BIN_DIR" "$BUILD_DIR"
  if is_built "$version" "$@"; then
    log "    $label $version: cached in $BIN_DIR"
    return 0
  fi
  log "    building $label $version (log: $BUILD_DIR/$name-$version.log)"
  run_with_heartbeat "build of $label" "$BUILD_DIR/$name-$version.log" "$fn"
}

build_all() {
  ensure_built etcd "$ETCD_VERSION" build_etcd etcd
  ensure_built "kube-apiserver, kube-controller-manager, kube-scheduler" "$KUBE_VERSION" build_kube \
    kube-apiserver kube-controller-manager kube-scheduler
  ensure_built kwok "$KWOK_VERSION" build_kwok kwok
  ensure_kwok_stages
  ensure_built helm "$HELM_VERSION" build_helm helm
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  build_all
fi
