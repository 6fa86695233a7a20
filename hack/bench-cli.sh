#!/usr/bin/env bash
# `make bench-cli`: `millrace validate` and `millrace render` of a generated set of N flows
# (default 1000) with their contracts, connections and lookup ConfigMaps, in release mode.
#
# Every flow has jq programs of its own (no two flows share a program), so nothing is judged once
# for many flows. Rounds alternate validate and render; every round is printed, and the medians are
# reported.
# The last line is
#   bench-cli: flows=N objects=M validate_s=X render_s=Y total_s=X+Y goal_s=2.0
# Knobs (environment): BENCH_CLI_FLOWS (default 1000), BENCH_CLI_ROUNDS (default 5).
# See docs/benchmarks.md for the recorded results.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(dirname "$HACK_DIR")"
# shellcheck source=hack/lib.sh
source "$HACK_DIR/lib.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$MILLRACE_HOME/target}"
CARGO="${CARGO:-cargo}"
FLOWS="${BENCH_CLI_FLOWS:-1000}"
ROUNDS="${BENCH_CLI_ROUNDS:-5}"
SET_DIR="$MILLRACE_HOME/bench/cli-$FLOWS"
MILLRACE="$CARGO_TARGET_DIR/release/millrace"

cd "$REPO_DIR"
step 1 3 "building millrace (release; the same package set as the other release builds)"
"$CARGO" build --release -p millrace-operator -p millrace-worker -p millrace-cli

step 2 3 "generating $FLOWS flows with their contracts, connections and lookups in $SET_DIR"
rm -rf "$SET_DIR"
python3 - "$SET_DIR" "$FLOWS" <<'PY'
import os, sys
out, flows = sys.argv[1], int(sys.argv[2])
contracts, connections, lookups = max(1, flows // 10), max(2, flows // 50), max(1, flows // 50)
os.makedirs(out + "/contracts"); os.makedirs(out + "/flows")
with open(out + "/connections.yaml", "w") as f:
    for c in range(connections):
        if c % 2 == 0:
            f.write(f"""---
apiVersion: millrace.dev/v1alpha1
kind: PartnerConnection
metadata: {{name: bus-{c}}}
spec: {{system: MES, site: plant-{c}, amqp: {{uriSecretRef: {{name: bus-{c}, key: uri}}}}}}
""")
        else:
            f.write(f"""---
apiVersion: millrace.dev/v1alpha1
kind: PartnerConnection
metadata: {{name: erp-{c}}}
spec:
  system: ERP
  http: {{baseUrl: "https://erp-{c}.example.com/api", auth: {{type: Basic, secretRef: {{name: erp-{c}, key: credentials}}}}, timeout: 5s}}
  delivery: {{retry: {{maxAttempts: 6, backoff: Exponential, initialDelay: 1s, maxDelay: 1m}}}}
""")
with open(out + "/lookups.yaml", "w") as f:
    for l in range(lookups):
        f.write(f"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: plants-{l}}}\ndata:\n" +
                "".join(f"  site-{s}: \"{1000 + s}\"\n" for s in range(20)))
for c in range(contracts):
    with open(f"{out}/contracts/contract-{c}.yaml", "w") as f:
        f.write(f"""apiVersion: millrace.dev/v1alpha1
kind: EventContract
metadata: {{name: receipt-{c}}}
spec:
  type: com.acme.mfg.receipt{c}.v1
  compatibility: BackwardTransitive
  versions:
    - version: 1
      schema:
        type: object
        additionalProperties: false
        required: [id, site, qty, material]
        properties:
          id: {{type: string}}
          site: {{type: string}}
          material: {{type: string, pattern: "^[A-Z0-9-]+$"}}
          qty: {{type: object, required: [value, unit], properties: {{value: {{type: string}}, unit: {{type: string, enum: [EA, KG, M]}}}}}}
      examples: [{{id: R-1, site: site-1, material: M-100, qty: {{value: "5", unit: EA}}}}]
    - version: 2
      schema:
        type: object
        additionalProperties: false
        required: [id, site, qty, material]
        properties:
          id: {{type: string}}
          site: {{type: string}}
          material: {{type: string, pattern: "^[A-Z0-9-]+$"}}
          batch: {{type: string}}
          qty: {{type: object, required: [value, unit], properties: {{value: {{type: string}}, unit: {{type: string, enum: [EA, KG, M]}}}}}}
      examples: [{{id: R-2, site: site-2, material: M-100, batch: B1, qty: {{value: "2.5", unit: KG}}}}]
""")
for i in range(flows):
    bus, erp, lookup, contract = (i % (connections // 2)) * 2, (i % (connections // 2)) * 2 + 1, i % lookups, i % contracts
    with open(f"{out}/flows/flow-{i:04d}.yaml", "w") as f:
        f.write(f"""apiVersion: millrace.dev/v1alpha1
kind: IntegrationFlow
metadata: {{name: receipts-{i:04d}}}
spec:
  version: "1.{i % 7}.0"
  source: {{amqp: {{connection: bus-{bus}, exchange: wms.events, routingKeys: ["receipt.{i}.#"]}}}}
  contract: {{name: receipt-{contract}}}
  transform:
    jq: |
      {{receipt: .id, plant: $plants[.site], material: .material, qty: (.qty.value | tonumber),
        unit: .qty.unit, batch: (.batch // null), source: $source, flow: {i}}}
    lookups: [{{name: plants, configMapRef: {{name: plants-{lookup}}}}}]
    args: {{source: wms-{i}}}
  routes:
    - name: erp
      when: '.qty > {i % 5}'
      destination: {{connection: erp-{erp}, http: {{method: POST, path: /goods-receipts}}}}
    - name: canonical
      destination: {{connection: bus-{bus}, amqp: {{exchange: canonical.events, routingKey: receipt.posted}}}}
  delivery:
    idempotency: {{key: '.id + \":{i}\"', window: 24h}}
  replay: {{retention: 3d}}
  sla: {{maxLatency: 30s}}
  workers: {{replicas: 2, prefetch: 200}}
""")
PY
objects=$(grep -rh '^kind:' "$SET_DIR" | wc -l)
log "    $objects objects in $(find "$SET_DIR" -name '*.yaml' | wc -l) files"

step 3 3 "timing $ROUNDS alternating rounds of validate and render"
"$MILLRACE" validate "$SET_DIR" >/dev/null 2>"$SET_DIR.validate.log" || die "the generated set is invalid: $(tail -3 "$SET_DIR.validate.log")"
seconds() { # seconds COMMAND...: wall time of one run, in seconds
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null 2>&1
  end=$(date +%s.%N)
  python3 -c "print(f'{$end - $start:.3f}')"
}
validate=() render=()
for ((r = 1; r <= ROUNDS; r++)); do
  v=$(seconds "$MILLRACE" validate "$SET_DIR")
  g=$(seconds "$MILLRACE" render "$SET_DIR" -n bench)
  validate+=("$v") render+=("$g")
  log "    round $r/$ROUNDS: validate ${v}s, render ${g}s"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
mv=$(median "${validate[@]}") mr=$(median "${render[@]}")
total=$(python3 -c "print(f'{$mv + $mr:.3f}')")
log "    medians: validate ${mv}s, render ${mr}s (render also validates: it judges the set before it renders)"
echo "bench-cli: flows=$FLOWS objects=$objects validate_s=$mv render_s=$mr total_s=$total goal_s=2.0"
