//! Realistic business events for plant Berlin (site 1000), one generator per contract. Each
//! event comes with the business key its destinations record it under and the routes that
//! should receive it, so the report can account for it.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, FixedOffset, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};

use crate::scenario::FlowSpec;

/// One generated event.
#[derive(Debug, Clone)]
pub struct Generated {
    /// CloudEvents `data`.
    pub data: Value,
    /// CloudEvents `subject`: the business document it is about.
    pub subject: String,
    /// The key the flow's transform writes to `externalReference`.
    pub key: String,
    /// Routes that should receive it.
    pub routes: Vec<String>,
    /// False when deliberately broken.
    pub valid: bool,
    /// Ordering key and position, for ordered flows.
    pub order: Option<(String, u64)>,
}

/// Master data of the plant: what the MES makes, what the WMS stores, who carries it.
const FINISHED_GOODS: &[(&str, &str)] = &[
    ("FG-4711", "EA"),
    ("FG-4712", "EA"),
    ("FG-5230", "EA"),
    ("FG-6100", "MTR"),
];
const SEMI_FINISHED: &[(&str, &str)] = &[("SA-1002", "KGM"), ("SA-1044", "EA")];
const RAW_MATERIALS: &[(&str, &str)] = &[("RM-2040", "KGM"), ("RM-2111", "LTR"), ("RM-3005", "EA")];
const WORK_CENTERS: &[(&str, &str)] = &[
    ("ASSY-01", "PRESS-07"),
    ("ASSY-02", "ROBOT-12"),
    ("PAINT-2", "BOOTH-3"),
    ("PACK-01", "WRAP-1"),
];
const CUSTOMERS: &[(&str, &str, &str, &str)] = &[
    ("100234", "Nordwerk GmbH", "DE", "4012345000009"),
    ("100871", "Alpenbau AG", "AT", "9012345000011"),
    (
        "101502",
        "Vistula Maszyny Sp. z o.o.",
        "PL",
        "5901234000018",
    ),
    ("102019", "Rhone Industrie SA", "FR", "3012345000014"),
];
const CARRIERS: &[(&str, &str)] = &[("DHLF", "LTL"), ("DSVR", "TL"), ("UPSN", "PARCEL")];
const ROUTE_STOPS: &[(&str, &str, f64, f64)] = &[
    ("Berlin", "DE", 52.52, 13.405),
    ("Magdeburg", "DE", 52.13, 11.62),
    ("Hannover", "DE", 52.37, 9.73),
    ("Hamburg", "DE", 53.55, 9.99),
    ("Poznan", "PL", 52.41, 16.93),
];
const SUPPLIERS: &[&str] = &["200871", "200912", "201337"];
const INCOTERMS: &[&str] = &["DAP", "FCA", "EXW", "DDP", "CPT"];

/// Status sequence of a road shipment (X12 214 AT7 codes).
const MILESTONES: &[&str] = &["X3", "AF", "X6", "X6", "X1", "D1"];

/// A shipment on the road, for carrier milestones.
struct OpenShipment {
    id: String,
    scac: &'static str,
    next: usize,
    sent: u64,
}

/// Generates events. Identifiers embed a run number so that two runs never share a key.
pub struct Generator {
    rng: StdRng,
    run: u32,
    counters: std::collections::HashMap<&'static str, u64>,
    shipments: VecDeque<OpenShipment>,
    shipment_seq: u64,
}

/// Berlin's UTC offset in winter, for event timestamps as the plant's systems write them.
fn berlin() -> FixedOffset {
    FixedOffset::east_opt(3600).expect("valid offset")
}

fn ts(t: DateTime<Utc>) -> String {
    t.with_timezone(&berlin())
        .to_rfc3339_opts(SecondsFormat::Millis, false)
}

impl Generator {
    /// A generator seeded with `seed`, numbering documents with `run`.
    pub fn new(seed: u64, run: u32) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            run: run % 10_000,
            counters: Default::default(),
            shipments: VecDeque::new(),
            shipment_seq: 0,
        }
    }

    fn next_number(&mut self, flow: &'static str) -> u64 {
        let n = self.counters.entry(flow).or_insert(0);
        *n += 1;
        *n
    }

    /// The next event for `flow`; when `broken`, one that violates the contract.
    pub fn next(&mut self, flow: &FlowSpec, now: DateTime<Utc>, broken: bool) -> Generated {
        let n = self.next_number(flow.name);
        let mut event = match flow.contract {
            "sales-order-released" => self.sales_order(n, now),
            "production-completed" => self.production(n, now),
            "shipment-confirmed" => self.shipment_confirmed(n, now),
            "goods-receipt-posted" => self.goods_receipt(n, now),
            "carrier-milestone" => self.milestone(now),
            "material-scrapped" => self.scrap(now),
            "inventory-adjusted" => self.inventory(n, now),
            other => panic!("no generator for contract {other}"),
        };
        if broken {
            break_contract(flow.contract, &mut event.data);
            event.valid = false;
            if let Some(key) = key_of(flow.contract, &event.data) {
                event.key = key;
            }
        }
        if event.routes.is_empty() {
            event.routes = flow.routes.iter().map(|r| r.name.to_string()).collect();
        }
        event
    }

    fn sales_order(&mut self, n: u64, now: DateTime<Utc>) -> Generated {
        let id = format!("45{:04}{:04}", self.run, n % 10_000);
        let (party, name, country, gln) = *CUSTOMERS.choose(&mut self.rng).expect("customers");
        let incoterms = *INCOTERMS.choose(&mut self.rng).expect("incoterms");
        let lines: Vec<Value> = (0..self.rng.random_range(1..=3))
            .map(|i| {
                let (item, uom) = *FINISHED_GOODS.choose(&mut self.rng).expect("goods");
                json!({
                    "lineNumber": (i + 1) * 10,
                    "itemId": item,
                    "orderedQuantity": {"value": self.rng.random_range(1..=60) * 10, "uom": uom},
                    "unitPrice": {"amount": (self.rng.random_range(500..5000) as f64) / 100.0, "per": {"value": 1, "uom": uom}},
                    "requestedShipDate": (now + Duration::days(3)).format("%Y-%m-%d").to_string(),
                })
            })
            .collect();
        let data = json!({
            "salesOrderId": id,
            "customerPurchaseOrder": format!("PO-{}", self.rng.random_range(10_000..99_999)),
            "releasedAt": ts(now),
            "salesOrganization": "DE01",
            "plant": "1000",
            "soldToParty": {"partyId": party, "name": name, "countryCode": country},
            "shipToParty": {"partyId": party, "gln": gln, "countryCode": country},
            "requestedDeliveryDate": (now + Duration::days(7)).format("%Y-%m-%d").to_string(),
            "incoterms": {"code": incoterms, "place": "Berlin"},
            "currency": "EUR",
            "lines": lines,
        });
        // Ex works: the customer collects, so no transport is planned.
        let mut routes = vec!["wms-outbound-delivery".to_string()];
        if incoterms != "EXW" {
            routes.push("tms-transport-request".to_string());
        }
        Generated {
            subject: id.clone(),
            key: id,
            data,
            routes,
            valid: true,
            order: None,
        }
    }

    fn production(&mut self, n: u64, now: DateTime<Utc>) -> Generated {
        let order = format!("1{:04}{:04}", self.run, n % 10_000);
        let segment = *["0010", "0020", "0030"]
            .choose(&mut self.rng)
            .expect("segments");
        let finished = self.rng.random_bool(0.75);
        let (material, uom) = if finished {
            *FINISHED_GOODS.choose(&mut self.rng).expect("goods")
        } else {
            *SEMI_FINISHED.choose(&mut self.rng).expect("semi")
        };
        let (work_center, equipment) = *WORK_CENTERS.choose(&mut self.rng).expect("wc");
        let qty = if uom == "EA" {
            json!(self.rng.random_range(10..=500))
        } else {
            json!((self.rng.random_range(100..20_000) as f64) / 10.0)
        };
        let mut data = json!({
            "prodOrderId": order,
            "segment": segment,
            "site": "1000",
            "workCenter": work_center,
            "equipmentId": equipment,
            "startedAt": ts(now - Duration::minutes(self.rng.random_range(20..180))),
            "completedAt": ts(now),
            "produced": [{
                "materialId": material,
                "batch": format!("B{}{:03}", now.format("%y%m%d"), n % 1000),
                "qty": {"value": qty, "uom": uom},
            }],
            "personnelId": format!("OP-{}", self.rng.random_range(2000..2400)),
        });
        if self.rng.random_bool(0.3) {
            data["scrap"] = json!({"value": self.rng.random_range(1..8), "uom": uom});
        }
        let mut routes = vec!["erp-confirmation".to_string()];
        if finished {
            routes.push("wms-putaway".to_string());
        }
        Generated {
            subject: order.clone(),
            key: format!("{order}:{segment}"),
            data,
            routes,
            valid: true,
            order: None,
        }
    }

    fn shipment_confirmed(&mut self, n: u64, now: DateTime<Utc>) -> Generated {
        let shipment = format!("BER-SH-{:04}{:05}", self.run, n);
        let (scac, mode) = *CARRIERS.choose(&mut self.rng).expect("carriers");
        let lines: Vec<Value> = (0..self.rng.random_range(1..=3))
            .map(|i| {
                let (item, uom) = *FINISHED_GOODS.choose(&mut self.rng).expect("goods");
                let ordered = self.rng.random_range(1..=50) * 10;
                let short = self.rng.random_bool(0.1);
                let mut line = json!({
                    "lineNumber": i + 1,
                    "itemId": item,
                    "orderedQty": ordered,
                    "shippedQty": if short { ordered - 10 } else { ordered },
                    "uom": uom,
                });
                if short {
                    line["differenceReason"] = json!("SHORT_PICKED");
                }
                line
            })
            .collect();
        let data = json!({
            "warehouseId": "3PL-BER-01",
            "depositorOrderNumber": format!("80{:04}{:04}", self.run, n % 10_000),
            "purchaseOrderNumber": format!("PO-{}", self.rng.random_range(10_000..99_999)),
            "shipmentId": shipment,
            "shippedAt": ts(now),
            "carrier": {"scac": scac, "mode": mode},
            "billOfLading": format!("BOL-{}", self.rng.random_range(10_000_000..99_999_999)),
            "lines": lines,
            "totals": {"cartons": self.rng.random_range(1..80), "weight": {"value": self.rng.random_range(50..2000), "uom": "KGM"}},
        });
        Generated {
            subject: shipment.clone(),
            key: shipment,
            data,
            routes: vec![],
            valid: true,
            order: None,
        }
    }

    fn goods_receipt(&mut self, n: u64, now: DateTime<Utc>) -> Generated {
        let number = format!("50{:04}{:04}", self.run, n % 10_000);
        let year = now.format("%Y").to_string().parse::<i64>().unwrap_or(2026);
        let (material, uom) = *RAW_MATERIALS.choose(&mut self.rng).expect("raw");
        let inspect = self.rng.random_bool(0.2);
        let data = json!({
            "materialDocument": {"number": number, "year": year},
            "postedAt": ts(now),
            "plant": "1000",
            "movementType": if inspect { "103" } else { "101" },
            "supplierId": *SUPPLIERS.choose(&mut self.rng).expect("suppliers"),
            "purchaseOrderNumber": format!("45{:08}", self.rng.random_range(0..99_999_999)),
            "asnNumber": format!("ASN-{}-{}", now.format("%Y"), self.rng.random_range(100_000..999_999)),
            "deliveryNote": format!("LS-{}", self.rng.random_range(100_000..999_999)),
            "bizStep": "urn:epcglobal:cbv:bizstep:receiving",
            "lines": [{
                "poItem": 10,
                "materialId": material,
                "storageLocation": "0001",
                "batch": format!("S{}{:03}", now.format("%y%m"), n % 1000),
                "sscc": format!("3401234500{:08}", self.rng.random_range(0..99_999_999)),
                "qty": {"value": self.rng.random_range(1..=100) * 12, "uom": uom},
                "stockType": if inspect { "QUALITY_INSPECTION" } else { "UNRESTRICTED" },
            }],
        });
        Generated {
            subject: number.clone(),
            key: format!("{number}-{year}"),
            data,
            routes: vec![],
            valid: true,
            order: None,
        }
    }

    fn milestone(&mut self, now: DateTime<Utc>) -> Generated {
        // Keep a handful of shipments on the road; each reports its statuses in order.
        while self.shipments.len() < 8 {
            self.shipment_seq += 1;
            let (scac, _) = *CARRIERS.choose(&mut self.rng).expect("carriers");
            self.shipments.push_back(OpenShipment {
                id: format!("SH-1000-{:04}{:04}", self.run, self.shipment_seq),
                scac,
                next: 0,
                sent: 0,
            });
        }
        let i = self.rng.random_range(0..self.shipments.len());
        let shipment = &mut self.shipments[i];
        let status = MILESTONES[shipment.next];
        let stop = ROUTE_STOPS[shipment.next.min(ROUTE_STOPS.len() - 1)];
        shipment.next += 1;
        shipment.sent += 1;
        let id = shipment.id.clone();
        let seq = shipment.sent;
        let event_at = ts(now);
        let data = json!({
            "shipmentId": id,
            "billOfLading": format!("BOL-{}", &id[8..]),
            "carrierScac": shipment.scac,
            "statusCode": status,
            "statusReason": "NS",
            "eventAt": event_at,
            "estimatedDeliveryAt": ts(now + Duration::hours(6)),
            "location": {"city": stop.0, "country": stop.1, "latitude": stop.2, "longitude": stop.3},
        });
        if shipment.next >= MILESTONES.len() {
            self.shipments.remove(i);
        }
        Generated {
            subject: id.clone(),
            key: format!("{id}:{status}:{event_at}"),
            data,
            routes: vec![],
            valid: true,
            order: Some((id, seq)),
        }
    }

    fn scrap(&mut self, now: DateTime<Utc>) -> Generated {
        let id = uuid::Uuid::from_u128(self.rng.random()).to_string();
        let (material, uom) = *FINISHED_GOODS
            .iter()
            .chain(SEMI_FINISHED)
            .collect::<Vec<_>>()
            .choose(&mut self.rng)
            .expect("materials");
        let reason = *["DAMAGED", "OUT_OF_SPEC", "SETUP_LOSS", "CONTAMINATED"]
            .choose(&mut self.rng)
            .expect("reasons");
        let data = json!({
            "scrapId": id,
            "site": "1000",
            "storageLocation": "0001",
            "prodOrderId": format!("1{:04}{:04}", self.run, self.rng.random_range(1..9999)),
            "materialId": material,
            "qty": {"value": self.rng.random_range(1..25), "uom": uom},
            "reasonCode": reason,
            "bizStep": "urn:epcglobal:cbv:bizstep:destroying",
            "disposition": "urn:epcglobal:cbv:disp:destroyed",
            "readPoint": {"id": "urn:epc:id:sgln:4012345.00001.ASSY01"},
            "scrappedAt": ts(now),
            "costCenter": "CC-4100",
        });
        Generated {
            subject: id.clone(),
            key: id,
            data,
            routes: vec![],
            valid: true,
            order: None,
        }
    }

    fn inventory(&mut self, n: u64, now: DateTime<Utc>) -> Generated {
        let id = format!("ADJ-1000-{:04}-{:05}", self.run, n);
        let (material, uom) = *RAW_MATERIALS
            .iter()
            .chain(FINISHED_GOODS)
            .collect::<Vec<_>>()
            .choose(&mut self.rng)
            .expect("materials");
        let reason = *["CYCLE_COUNT", "DAMAGE", "FOUND", "LOST"]
            .choose(&mut self.rng)
            .expect("reasons");
        let delta = match reason {
            "FOUND" => self.rng.random_range(1..20) as f64,
            "CYCLE_COUNT" => self.rng.random_range(-20..20) as f64 + 0.5,
            _ => -(self.rng.random_range(1..20) as f64),
        };
        let data = json!({
            "adjustmentId": id,
            "site": "1000",
            "storageLocation": "0002",
            "bin": format!("0{}-0{}-{}", self.rng.random_range(1..9), self.rng.random_range(1..9), ["A", "B", "C"].choose(&mut self.rng).expect("bins")),
            "materialId": material,
            "quantityDelta": delta,
            "uom": uom,
            "reasonCode": reason,
            "bizStep": "urn:epcglobal:cbv:bizstep:cycle_counting",
            "readPoint": {"id": "urn:epc:id:sgln:4012345.00002.0103B"},
            "adjustedAt": ts(now),
            "countedBy": format!("WMS-U-{}", self.rng.random_range(100..200)),
        });
        Generated {
            subject: id.clone(),
            key: id,
            data,
            routes: vec![],
            valid: true,
            order: None,
        }
    }
}

/// The business key of an event's data, as the flow's transform computes `externalReference`.
/// Used to recognise dead-lettered events that lost their CloudEvents id.
pub fn key_of(contract: &str, data: &Value) -> Option<String> {
    let s = |v: &Value| v.as_str().map(str::to_string);
    match contract {
        "sales-order-released" => s(&data["salesOrderId"]),
        "production-completed" => Some(format!(
            "{}:{}",
            data["prodOrderId"].as_str()?,
            data["segment"].as_str()?
        )),
        "shipment-confirmed" => s(&data["shipmentId"]),
        "goods-receipt-posted" => Some(format!(
            "{}-{}",
            data["materialDocument"]["number"].as_str()?,
            data["materialDocument"]["year"].as_i64()?
        )),
        "carrier-milestone" => Some(format!(
            "{}:{}:{}",
            data["shipmentId"].as_str()?,
            data["statusCode"].as_str()?,
            data["eventAt"].as_str()?
        )),
        "material-scrapped" => s(&data["scrapId"]),
        "inventory-adjusted" => s(&data["adjustmentId"]),
        _ => None,
    }
}

/// Breaks one rule of the contract, the way a misconfigured partner system would.
fn break_contract(contract: &str, data: &mut Value) {
    match contract {
        "production-completed" => {
            data.as_object_mut().map(|o| o.remove("workCenter"));
        }
        "shipment-confirmed" => data["carrier"]["scac"] = json!("dhl freight"),
        "goods-receipt-posted" => data["movementType"] = json!("999"),
        "carrier-milestone" => data["statusCode"] = json!("ZZ"),
        "material-scrapped" => data["qty"]["value"] = json!(0),
        "inventory-adjusted" => {
            data.as_object_mut().map(|o| o.remove("uom"));
        }
        _ => data["unexpectedField"] = json!(true),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::scenario::FLOWS;

    /// The newest schema of every contract, from examples/manufacturing/contracts.
    fn schema(contract: &str) -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../manufacturing/contracts")
            .join(format!("{contract}.yaml"));
        let text = std::fs::read_to_string(&path).expect("contract file");
        let doc: Value = serde_yaml::from_str(&text).expect("contract YAML");
        doc["spec"]["versions"]
            .as_array()
            .and_then(|v| v.last())
            .map(|v| v["schema"].clone())
            .expect("a version")
    }

    #[test]
    fn generated_events_satisfy_their_contracts_and_broken_ones_do_not() {
        let mut g = Generator::new(7, 1234);
        let now = Utc::now();
        for flow in FLOWS {
            let validator = jsonschema::options()
                .should_validate_formats(true)
                .build(&schema(flow.contract))
                .expect("schema compiles");
            for _ in 0..200 {
                let e = g.next(flow, now, false);
                let errors: Vec<String> = validator
                    .iter_errors(&e.data)
                    .map(|e| e.to_string())
                    .collect();
                assert!(errors.is_empty(), "{}: {errors:?}\n{}", flow.name, e.data);
                assert!(!e.routes.is_empty());
                assert_eq!(
                    key_of(flow.contract, &e.data).as_deref(),
                    Some(e.key.as_str())
                );
                for r in &e.routes {
                    assert!(flow.routes.iter().any(|x| x.name == r), "{r}");
                }
            }
            if !matches!(flow.source, crate::scenario::Source::Http) {
                let broken = g.next(flow, now, true);
                assert!(!broken.valid);
                assert!(
                    !validator.is_valid(&broken.data),
                    "{}: the broken event passes",
                    flow.name
                );
            }
        }
    }

    #[test]
    fn keys_are_unique_and_milestones_come_in_order() {
        let mut g = Generator::new(1, 42);
        let flow = crate::scenario::flow("carrier-milestones").unwrap();
        let mut keys = std::collections::HashSet::new();
        let mut last: std::collections::HashMap<String, (u64, usize)> = Default::default();
        let start = Utc::now();
        for i in 0..500 {
            let e = g.next(flow, start + Duration::milliseconds(i), false);
            assert!(keys.insert(e.key.clone()), "duplicate key {}", e.key);
            let (shipment, seq) = e.order.unwrap();
            let status = e.data["statusCode"].as_str().unwrap();
            let pos = MILESTONES.iter().position(|s| *s == status).unwrap();
            if let Some((prev_seq, prev_pos)) = last.get(&shipment) {
                assert_eq!(seq, prev_seq + 1);
                assert!(pos >= *prev_pos);
            }
            last.insert(shipment, (seq, pos));
        }
        for flow in FLOWS {
            let mut keys = std::collections::HashSet::new();
            for i in 0..500 {
                let e = g.next(flow, start + Duration::milliseconds(1000 + i), false);
                assert!(
                    keys.insert(e.key.clone()),
                    "{}: duplicate key {}",
                    flow.name,
                    e.key
                );
            }
        }
    }
}
