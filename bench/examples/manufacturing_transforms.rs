//! Per-event CPU time of every jq program of the example flows (`examples/manufacturing/flows`
//! and `examples/basic`), through jaq and through the worker's native path:
//! `cargo run --release -p millrace-bench --example manufacturing_transforms`.
//!
//! Each program runs over 20,000 copies of its contract's example event (route predicates over
//! the transformed event), jaq and native alternating for seven rounds; the figures are the
//! median per event on one thread (the machine should be otherwise idle). The table prints as
//! Markdown. A program the native path leaves to jaq is marked so, and then both columns run jaq.
//!
//! The programs, events and lookup tables are copies of the example files (this crate does not
//! read YAML); the worker's test `every_example_program_is_answered_natively` reads the files
//! themselves and checks that each program is native.

use std::time::Instant;

use millrace_worker::pipeline::transform::{JqProgram, JqVariables};
use serde_json::Value;

const EVENTS: usize = 20_000;
const ROUNDS: usize = 7;

/// One example flow: its jq programs, variables and example event.
struct ExampleFlow {
    name: &'static str,
    /// `transform.lookups` names, each a table of [`lookup_table`].
    lookups: &'static [&'static str],
    /// `transform.args`, as JSON.
    args: &'static str,
    /// The contract's example event.
    event: &'static str,
    transform: &'static str,
    /// `(route, when)`, run on the transformed event.
    predicates: &'static [(&'static str, &'static str)],
    /// `(idempotency or ordering, key)`, run on the event.
    keys: &'static [(&'static str, &'static str)],
}

/// The lookup tables of examples/manufacturing/lookups.yaml, by the name the flows give them.
fn lookup_table(name: &str) -> Value {
    let data = match name {
        "plants" => r#"{"1000": "BE01", "1010": "BE02", "2000": "MU01", "3000": "PZ01"}"#,
        "uom" => {
            r#"{"EA": "ST", "H87": "ST", "C62": "ST", "KGM": "KG", "GRM": "G", "TNE": "TO",
                "MTR": "M", "MTK": "M2", "LTR": "L"}"#
        }
        other => panic!("no lookup table {other} in the example"),
    };
    serde_json::from_str(data).expect("a lookup table is JSON")
}

fn variables(flow: &ExampleFlow) -> JqVariables {
    let mut pairs: Vec<(String, Value)> = flow
        .lookups
        .iter()
        .map(|name| (name.to_string(), lookup_table(name)))
        .collect();
    let args: serde_json::Map<String, Value> =
        serde_json::from_str(flow.args).expect("args are a JSON object");
    pairs.extend(args);
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    JqVariables::new(pairs)
}

/// Mean wall time per input of one pass, in µs.
fn per_event(program: &JqProgram, vars: &JqVariables, inputs: &[Value]) -> f64 {
    let started = Instant::now();
    for input in inputs {
        std::hint::black_box(program.run(std::hint::black_box(input), vars)).ok();
    }
    started.elapsed().as_secs_f64() * 1e6 / inputs.len() as f64
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Times `code` on `input` both ways and prints a row; returns the program's output.
fn row(label: &str, code: &str, vars: &JqVariables, input: &Value) -> Value {
    let native = JqProgram::compile(code, vars).unwrap_or_else(|e| panic!("{label}: {e}"));
    let jaq = JqProgram::compile_jaq_only(code, vars).unwrap_or_else(|e| panic!("{label}: {e}"));
    let expected = jaq
        .run(input, vars)
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    assert_eq!(native.run(input, vars).as_ref(), Ok(&expected), "{label}");
    let answered = native.run_natively(input, vars).is_some();
    let inputs = vec![input.clone(); EVENTS];
    let (mut slow, mut fast) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        slow.push(per_event(&jaq, vars, &inputs));
        fast.push(per_event(&native, vars, &inputs));
    }
    let (slow, fast) = (median(slow), median(fast));
    let note = if answered { "" } else { " (left to jaq)" };
    let label = label.replace('|', "\\|");
    println!(
        "| {label}{note} | {slow:.2} | {fast:.2} | {:.1}× |",
        slow / fast
    );
    expected.into_iter().next().unwrap_or(Value::Null)
}

fn main() {
    println!(
        "jq programs of the example flows, median µs per event over {ROUNDS} rounds of {EVENTS}:"
    );
    println!();
    println!("| program | jaq µs | native µs | ratio |");
    println!("|---|---:|---:|---:|");
    for flow in FLOWS {
        let vars = variables(flow);
        let event: Value = serde_json::from_str(flow.event).expect("the example event is JSON");
        let output = row(
            &format!("{} transform", flow.name),
            flow.transform,
            &vars,
            &event,
        );
        for (route, code) in flow.predicates {
            row(
                &format!("{} route {route} `{code}`", flow.name),
                code,
                &vars,
                &output,
            );
        }
        for (kind, code) in flow.keys {
            row(
                &format!("{} {kind} key `{code}`", flow.name),
                code,
                &vars,
                &event,
            );
        }
    }
}

const FLOWS: &[ExampleFlow] = &[
    ExampleFlow {
        name: "carrier-milestones",
        lookups: &[],
        args: r#"{}"#,
        event: r#"{"shipmentId": "SH-1000-774411", "billOfLading": "BOL-88310027", "carrierScac": "DHLF", "statusCode": "AF", "statusReason": "NS", "eventAt": "2026-11-25T17:02:00+01:00", "estimatedDeliveryAt": "2026-11-26T08:00:00+01:00", "location": {"city": "Berlin", "country": "DE", "latitude": 52.52, "longitude": 13.405}, "equipmentNumber": "B-MX 4471"}"#,
        transform: r#"{
  externalReference: "\(.shipmentId):\(.statusCode):\(.eventAt)",
  shipmentId: .shipmentId,
  eventCode: ({X3: "ARRIVED_AT_PICKUP", AF: "DEPARTED_PICKUP", X6: "EN_ROUTE", X1: "ARRIVED_AT_DELIVERY",
               D1: "DELIVERED", SD: "DELAYED", AG: "ETA_UPDATED"}[.statusCode]),
  x12StatusCode: .statusCode,
  reasonCode: .statusReason,
  eventAt: .eventAt,
  estimatedDeliveryAt: .estimatedDeliveryAt,
  location: .location,
  carrier: .carrierScac,
  billOfLading: .billOfLading
}
"#,
        predicates: &[],
        keys: &[
            (
                "idempotency",
                r#".shipmentId + ":" + .statusCode + ":" + .eventAt"#,
            ),
            ("ordering", r#".shipmentId"#),
        ],
    },
    ExampleFlow {
        name: "inventory-sync",
        lookups: &["plants", "uom"],
        args: r#"{}"#,
        event: r#"{"adjustmentId": "ADJ-1000-2026-00871", "site": "1000", "storageLocation": "0002", "bin": "01-03-B", "materialId": "RM-2040", "batch": "S26K0419", "quantityDelta": -12.5, "uom": "KGM", "reasonCode": "CYCLE_COUNT", "bizStep": "urn:epcglobal:cbv:bizstep:cycle_counting", "readPoint": {"id": "urn:epc:id:sgln:4012345.00002.0103B"}, "adjustedAt": "2026-11-26T21:14:09+01:00", "countedBy": "WMS-U-118"}"#,
        transform: r#"{
  externalReference: .adjustmentId,
  movementType: (if .quantityDelta >= 0 then "701" else "702" end),
  plant: ($plants[.site] // error("no ERP plant for site \(.site) in ConfigMap plant-codes")),
  storageLocation: .storageLocation,
  storageBin: .bin,
  materialId: .materialId,
  batch: .batch,
  quantity: (if .quantityDelta < 0 then 0 - .quantityDelta else .quantityDelta end),
  unit: ($uom[.uom] // error("no ERP unit for \(.uom) in ConfigMap units-of-measure")),
  reason: .reasonCode,
  postingDate: (.adjustedAt | split("T") | .[0])
}
"#,
        predicates: &[],
        keys: &[("idempotency", r#".adjustmentId"#)],
    },
    ExampleFlow {
        name: "order-to-fulfillment",
        lookups: &[],
        args: r#"{}"#,
        event: r#"{"salesOrderId": "4500012873", "customerPurchaseOrder": "PO-88121", "releasedAt": "2026-11-20T10:15:00Z", "salesOrganization": "DE01", "plant": "1000", "soldToParty": {"partyId": "100234", "name": "Nordwerk GmbH", "countryCode": "DE"}, "shipToParty": {"partyId": "100234", "gln": "4012345000009", "countryCode": "DE"}, "requestedDeliveryDate": "2026-12-01", "incoterms": {"code": "DAP", "place": "Hamburg"}, "currency": "EUR", "lines": [{"lineNumber": 10, "itemId": "FG-4711", "gtin": "04012345123456", "orderedQuantity": {"value": 480, "uom": "EA"}, "unitPrice": {"amount": 12.4, "per": {"value": 1, "uom": "EA"}}, "requestedShipDate": "2026-11-28"}]}"#,
        transform: r#"{
  externalReference: .salesOrderId,
  orderType: "OUTBOUND",
  salesOrderId: .salesOrderId,
  customerPurchaseOrder: .customerPurchaseOrder,
  shipFromPlant: .plant,
  shipTo: {partyId: .shipToParty.partyId, gln: .shipToParty.gln, countryCode: .shipToParty.countryCode},
  requestedDeliveryDate: .requestedDeliveryDate,
  incoterms: (.incoterms.code // "DAP"),
  lines: [.lines[] | {lineNumber: .lineNumber, itemId: .itemId, quantity: .orderedQuantity.value,
                      uom: .orderedQuantity.uom, requestedShipDate: .requestedShipDate}]
}
"#,
        predicates: &[("tms-transport-request", r#".incoterms != "EXW""#)],
        keys: &[("idempotency", r#".salesOrderId"#)],
    },
    ExampleFlow {
        name: "procure-to-receipt",
        lookups: &["plants", "uom"],
        args: r#"{}"#,
        event: r#"{"materialDocument": {"number": "5000123456", "year": 2026}, "postedAt": "2026-11-26T08:31:12+01:00", "plant": "1000", "movementType": "101", "supplierId": "200871", "purchaseOrderNumber": "4500098765", "asnNumber": "ASN-2026-118832", "deliveryNote": "LS-771203", "bizStep": "urn:epcglobal:cbv:bizstep:receiving", "lines": [{"poItem": 10, "materialId": "RM-2040", "storageLocation": "0001", "batch": "S26K0419", "sscc": "340123450000012345", "qty": {"value": 1200, "uom": "KGM"}, "stockType": "QUALITY_INSPECTION"}]}"#,
        transform: r#"{
  externalReference: "\(.materialDocument.number)-\(.materialDocument.year)",
  goodsMovementCode: "01",
  movementType: .movementType,
  postingDate: (.postedAt | split("T") | .[0]),
  plant: ($plants[.plant] // error("no ERP plant for site \(.plant) in ConfigMap plant-codes")),
  purchaseOrder: .purchaseOrderNumber,
  supplier: .supplierId,
  deliveryNote: .deliveryNote,
  inboundDeliveryReference: .asnNumber,
  items: [.lines[] | {
    purchaseOrderItem: .poItem,
    materialId: .materialId,
    storageLocation: .storageLocation,
    batch: .batch,
    sscc: .sscc,
    quantity: .qty.value,
    unit: ($uom[.qty.uom] // .qty.uom),
    stockType: ({UNRESTRICTED: "", QUALITY_INSPECTION: "X", BLOCKED: "S"}[.stockType])
  }]
}
"#,
        predicates: &[],
        keys: &[(
            "idempotency",
            r#".materialDocument.number + "-" + (.materialDocument.year | tostring)"#,
        )],
    },
    ExampleFlow {
        name: "production-to-inventory",
        lookups: &["plants", "uom"],
        args: r#"{}"#,
        event: r#"{"prodOrderId": "1000461", "segment": "0010", "site": "1000", "workCenter": "ASSY-01", "equipmentId": "PRESS-07", "completedAt": "2026-11-25T14:20:00+01:00", "produced": [{"materialId": "FG-4711", "batch": "B2611250C", "qty": {"value": 500, "uom": "EA"}}]}"#,
        transform: r#".produced[0] as $out
| {
    externalReference: "\(.prodOrderId):\(.segment)",
    orderId: .prodOrderId,
    operation: .segment,
    plant: ($plants[.site] // error("no ERP plant for MES site \(.site) in ConfigMap plant-codes")),
    workCenter: .workCenter,
    equipment: .equipmentId,
    materialId: $out.materialId,
    batch: $out.batch,
    yieldQuantity: $out.qty.value,
    scrapQuantity: (.scrap.value // 0),
    unit: ($uom[$out.qty.uom] // error("no ERP unit for \($out.qty.uom) in ConfigMap units-of-measure")),
    postingDate: (.completedAt | split("T") | .[0]),
    confirmedAt: .completedAt,
    confirmedBy: .personnelId,
    finalConfirmation: true
  }
"#,
        predicates: &[("wms-putaway", r#".materialId | startswith("FG-")"#)],
        keys: &[("idempotency", r#".prodOrderId + ":" + .segment"#)],
    },
    ExampleFlow {
        name: "scrap-to-finance",
        lookups: &["plants", "uom"],
        args: r#"{"defaultCostCenter": "CC-4100"}"#,
        event: r#"{"scrapId": "6f1d2c9e-2b7c-4a31-9a55-0c1f4b8e2d11", "site": "1000", "storageLocation": "0001", "prodOrderId": "1000457", "materialId": "FG-4711", "batch": "B2611240A", "qty": {"value": 6, "uom": "EA"}, "reasonCode": "OUT_OF_SPEC", "bizStep": "urn:epcglobal:cbv:bizstep:destroying", "disposition": "urn:epcglobal:cbv:disp:destroyed", "readPoint": {"id": "urn:epc:id:sgln:4012345.00001.ASSY01"}, "scrappedAt": "2026-11-24T07:46:02+01:00", "costCenter": "CC-4100"}"#,
        transform: r#"{
  externalReference: .scrapId,
  movementType: "551",
  plant: ($plants[.site] // error("no ERP plant for site \(.site) in ConfigMap plant-codes")),
  storageLocation: (.storageLocation // "0001"),
  materialId: .materialId,
  batch: .batch,
  quantity: .qty.value,
  unit: ($uom[.qty.uom] // error("no ERP unit for \(.qty.uom) in ConfigMap units-of-measure")),
  costCenter: (.costCenter // $defaultCostCenter),
  reason: .reasonCode,
  orderReference: .prodOrderId,
  postingDate: (.scrappedAt | split("T") | .[0])
}
"#,
        predicates: &[],
        keys: &[("idempotency", r#".scrapId"#)],
    },
    ExampleFlow {
        name: "shipment-to-cash",
        lookups: &[],
        args: r#"{}"#,
        event: r#"{"warehouseId": "3PL-RTM-01", "depositorOrderNumber": "8000441", "purchaseOrderNumber": "PO-88121", "shipmentId": "RTM-SH-5531", "shippedAt": "2026-11-27T13:05:00+01:00", "carrier": {"scac": "MAEU", "mode": "OCEAN"}, "billOfLading": "MAEU244511879", "lines": [{"lineNumber": 1, "itemId": "FG-4711", "orderedQty": 480, "shippedQty": 470, "uom": "EA", "differenceReason": "SHORT_PICKED"}], "totals": {"cartons": 47, "weight": {"value": 805, "uom": "KGM"}}}"#,
        transform: r#"{
  externalReference: .shipmentId,
  deliveryId: .depositorOrderNumber,
  actualGoodsMovementDate: (.shippedAt | split("T") | .[0]),
  shippedAt: .shippedAt,
  carrierScac: .carrier.scac,
  billOfLading: .billOfLading,
  items: [.lines[] | {item: .lineNumber, materialId: .itemId, pickedQuantity: .shippedQty,
                      unit: .uom, shortReason: .differenceReason}],
  releaseForBilling: true
}
"#,
        predicates: &[],
        keys: &[("idempotency", r#".shipmentId"#)],
    },
    ExampleFlow {
        name: "production-to-erp",
        lookups: &[],
        args: r#"{"plant": "1000"}"#,
        event: r#"{"prodOrderId": "1000234", "site": "berlin", "material": "FG-4711", "quantity": {"value": 120, "uom": "EA"}}"#,
        transform: r#"{order: .prodOrderId, plant: $plant, material: .material, qty: .quantity.value, uom: .quantity.uom}"#,
        predicates: &[("erp", r#".qty > 0"#)],
        keys: &[("idempotency", r#".prodOrderId"#)],
    },
];
