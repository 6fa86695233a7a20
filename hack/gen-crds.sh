#!/usr/bin/env bash
# Regenerates the checked-in CRD YAML from the Rust types: crds/yaml/ and the Helm chart's crds/.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run -q -p millrace-operator -- crds --out-dir crds/yaml --schemas-dir crds/schemas
if [[ -d charts/millrace ]]; then
  cargo run -q -p millrace-operator -- crds --out-dir charts/millrace/crds
fi
echo "CRDs written to crds/yaml (JSON Schemas for kubeconform to crds/schemas)$( [[ -d charts/millrace ]] && echo ' and charts/millrace/crds')"
