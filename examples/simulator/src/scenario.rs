//! The plant-berlin scenario as the simulators see it: which partner publishes which event to
//! which exchange, which routes each flow has and where they land. It mirrors the manifests in
//! `examples/manufacturing/flows/`; a test keeps the two in step.

/// Path under which the simulated ERP serves its API (the ERP connection's `baseUrl` ends with it).
pub const ERP_BASE_PATH: &str = "/erp/api";

/// Topic exchanges the partners publish their events to.
pub const SOURCE_EXCHANGES: &[&str] = &[MES_EVENTS, WMS_EVENTS, TMS_EVENTS];

/// The MES publishes production events here.
pub const MES_EVENTS: &str = "mes.events";
/// The WMS (a 3PL warehouse) publishes receipts, shipments and counts here.
pub const WMS_EVENTS: &str = "wms.events";
/// The TMS publishes carrier milestones here.
pub const TMS_EVENTS: &str = "tms.events";

/// A partner system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Erp,
    Wms,
    Tms,
    Mes,
}

impl System {
    /// The name used in receipts and reports.
    pub fn name(self) -> &'static str {
        match self {
            System::Erp => "ERP",
            System::Wms => "WMS",
            System::Tms => "TMS",
            System::Mes => "MES",
        }
    }

    /// The exchange flows deliver to, for systems that receive over AMQP.
    pub fn inbound_exchange(self) -> &'static str {
        match self {
            System::Wms => "wms.inbound",
            System::Tms => "tms.inbound",
            System::Erp | System::Mes => "",
        }
    }

    /// The partner's own queue on its inbound exchange, which the simulator consumes.
    pub fn inbound_queue(self) -> &'static str {
        match self {
            System::Wms => "sim.wms.inbound",
            System::Tms => "sim.tms.inbound",
            System::Erp | System::Mes => "",
        }
    }
}

/// Where a flow's events come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Published by `system` to `exchange` with `routing_key`.
    Amqp {
        system: System,
        exchange: &'static str,
        routing_key: &'static str,
    },
    /// Posted by the ERP to the flow's HTTP ingress.
    Http,
}

/// Where one route delivers: the ERP document type it posts, or the AMQP routing key it
/// publishes with on the system's inbound exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Destination {
    pub system: System,
    /// ERP document type (see `partners`) or routing key.
    pub channel: &'static str,
}

/// One route of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    pub name: &'static str,
    pub destination: Destination,
}

/// One flow of the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowSpec {
    /// IntegrationFlow name.
    pub name: &'static str,
    /// EventContract name.
    pub contract: &'static str,
    /// CloudEvents type.
    pub event_type: &'static str,
    /// CloudEvents source.
    pub ce_source: &'static str,
    pub source: Source,
    pub routes: &'static [RouteSpec],
    /// Share of the event rate, relative to the other flows.
    pub weight: u32,
}

const fn erp(name: &'static str, document: &'static str) -> RouteSpec {
    RouteSpec {
        name,
        destination: Destination {
            system: System::Erp,
            channel: document,
        },
    }
}

const fn amqp(name: &'static str, system: System, routing_key: &'static str) -> RouteSpec {
    RouteSpec {
        name,
        destination: Destination {
            system,
            channel: routing_key,
        },
    }
}

/// Every flow of the scenario.
pub const FLOWS: &[FlowSpec] = &[
    FlowSpec {
        name: "order-to-fulfillment",
        contract: "sales-order-released",
        event_type: "com.acme.mfg.sales-order.released.v1",
        ce_source: "urn:acme:erp:s4:berlin",
        source: Source::Http,
        routes: &[
            amqp(
                "wms-outbound-delivery",
                System::Wms,
                "outbound-delivery.create",
            ),
            amqp(
                "tms-transport-request",
                System::Tms,
                "transport-request.create",
            ),
        ],
        weight: 15,
    },
    FlowSpec {
        name: "production-to-inventory",
        contract: "production-completed",
        event_type: "com.acme.mfg.production.completed.v1",
        ce_source: "urn:acme:mes:berlin",
        source: Source::Amqp {
            system: System::Mes,
            exchange: MES_EVENTS,
            routing_key: "production.completed.berlin",
        },
        routes: &[
            erp("erp-confirmation", "production-confirmation"),
            amqp("wms-putaway", System::Wms, "putaway.request"),
        ],
        weight: 25,
    },
    FlowSpec {
        name: "shipment-to-cash",
        contract: "shipment-confirmed",
        event_type: "com.acme.mfg.shipment.confirmed.v1",
        ce_source: "urn:acme:wms:3pl-berlin",
        source: Source::Amqp {
            system: System::Wms,
            exchange: WMS_EVENTS,
            routing_key: "shipment.confirmed",
        },
        routes: &[erp("erp-goods-issue", "goods-issue")],
        weight: 12,
    },
    FlowSpec {
        name: "procure-to-receipt",
        contract: "goods-receipt-posted",
        event_type: "com.acme.mfg.goods-receipt.posted.v1",
        ce_source: "urn:acme:wms:3pl-berlin",
        source: Source::Amqp {
            system: System::Wms,
            exchange: WMS_EVENTS,
            routing_key: "goods-receipt.posted",
        },
        routes: &[erp("erp-goods-receipt", "goods-receipt")],
        weight: 12,
    },
    FlowSpec {
        name: "carrier-milestones",
        contract: "carrier-milestone",
        event_type: "com.acme.mfg.carrier.milestone.v1",
        ce_source: "urn:acme:tms:berlin",
        source: Source::Amqp {
            system: System::Tms,
            exchange: TMS_EVENTS,
            routing_key: "carrier.milestone.road",
        },
        routes: &[erp("erp-shipment-event", "shipment-event")],
        weight: 20,
    },
    FlowSpec {
        name: "scrap-to-finance",
        contract: "material-scrapped",
        event_type: "com.acme.mfg.material.scrapped.v1",
        ce_source: "urn:acme:mes:berlin",
        source: Source::Amqp {
            system: System::Mes,
            exchange: MES_EVENTS,
            routing_key: "material.scrapped.berlin",
        },
        routes: &[erp("erp-scrap-posting", "goods-movement")],
        weight: 8,
    },
    FlowSpec {
        name: "inventory-sync",
        contract: "inventory-adjusted",
        event_type: "com.acme.mfg.inventory.adjusted.v1",
        ce_source: "urn:acme:wms:3pl-berlin",
        source: Source::Amqp {
            system: System::Wms,
            exchange: WMS_EVENTS,
            routing_key: "inventory.adjusted",
        },
        routes: &[erp("erp-inventory-difference", "goods-movement")],
        weight: 8,
    },
];

/// The flow named `name`.
pub fn flow(name: &str) -> Option<&'static FlowSpec> {
    FLOWS.iter().find(|f| f.name == name)
}

/// Flows whose events must arrive in order per key, with the ERP document that shows the order.
pub const ORDERED_FLOWS: &[&str] = &["carrier-milestones"];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    fn manifests() -> Vec<serde_json::Value> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manufacturing/flows");
        let mut docs = Vec::new();
        for entry in std::fs::read_dir(&dir).expect("examples/manufacturing/flows exists") {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|x| x == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                for doc in text.split("\n---") {
                    let v: serde_json::Value = serde_yaml::from_str(doc).unwrap();
                    if v["kind"] == "IntegrationFlow" {
                        docs.push(v);
                    }
                }
            }
        }
        docs
    }

    /// The simulators publish where the flows listen, and the routes land where the partner
    /// simulators record them.
    #[test]
    fn flows_match_the_manifests() {
        let docs = manifests();
        let names: BTreeSet<&str> = docs
            .iter()
            .filter_map(|d| d["metadata"]["name"].as_str())
            .collect();
        let expected: BTreeSet<&str> = FLOWS.iter().map(|f| f.name).collect();
        assert_eq!(names, expected);
        for doc in &docs {
            let spec = &doc["spec"];
            let flow = flow(doc["metadata"]["name"].as_str().unwrap()).unwrap();
            assert_eq!(spec["contract"]["name"], flow.contract, "{}", flow.name);
            match flow.source {
                Source::Http => assert!(spec["source"]["http"].is_object(), "{}", flow.name),
                Source::Amqp {
                    exchange,
                    routing_key,
                    ..
                } => {
                    let source = &spec["source"]["amqp"];
                    assert_eq!(source["exchange"], exchange, "{}", flow.name);
                    let keys: Vec<&str> = source["routingKeys"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter_map(|k| k.as_str())
                        .collect();
                    assert!(
                        keys.iter().any(|k| topic_matches(k, routing_key)),
                        "{}: {routing_key} matches none of {keys:?}",
                        flow.name
                    );
                }
            }
            let routes = spec["routes"].as_array().unwrap();
            assert_eq!(routes.len(), flow.routes.len(), "{}", flow.name);
            for (route, want) in routes.iter().zip(flow.routes) {
                assert_eq!(route["name"], want.name, "{}", flow.name);
                let dest = &route["destination"];
                match want.destination.system {
                    System::Erp => {
                        let path = dest["http"]["path"].as_str().unwrap();
                        let document = match path {
                            "/production/confirmations" => "production-confirmation",
                            "/goods-receipts" => "goods-receipt",
                            "/goods-movements" => "goods-movement",
                            p if p.starts_with("/outbound-deliveries/") => "goods-issue",
                            p if p.starts_with("/shipments/") => "shipment-event",
                            other => panic!("{}: the ERP serves no {other}", flow.name),
                        };
                        assert_eq!(document, want.destination.channel, "{}", flow.name);
                    }
                    system => {
                        assert_eq!(dest["amqp"]["exchange"], system.inbound_exchange());
                        assert_eq!(dest["amqp"]["routingKey"], want.destination.channel);
                    }
                }
            }
            let ordered = spec["delivery"]["ordering"].is_object();
            assert_eq!(
                ordered,
                ORDERED_FLOWS.contains(&flow.name),
                "{}: ordering",
                flow.name
            );
        }
    }

    /// AMQP topic matching: `*` is one word, `#` zero or more.
    fn topic_matches(pattern: &str, key: &str) -> bool {
        fn go(p: &[&str], k: &[&str]) -> bool {
            match (p.first(), k.first()) {
                (None, None) => true,
                (Some(&"#"), _) => go(&p[1..], k) || (!k.is_empty() && go(p, &k[1..])),
                (Some(&"*"), Some(_)) => go(&p[1..], &k[1..]),
                (Some(a), Some(b)) if a == b => go(&p[1..], &k[1..]),
                _ => false,
            }
        }
        let p: Vec<&str> = pattern.split('.').collect();
        let k: Vec<&str> = key.split('.').collect();
        go(&p, &k)
    }

    #[test]
    fn topic_matching() {
        assert!(topic_matches(
            "production.completed.#",
            "production.completed.berlin"
        ));
        assert!(topic_matches(
            "production.completed.#",
            "production.completed"
        ));
        assert!(topic_matches("*.confirmed", "shipment.confirmed"));
        assert!(!topic_matches("*.confirmed", "a.shipment.confirmed"));
        assert!(!topic_matches(
            "goods-receipt.posted",
            "goods-receipt.reversed"
        ));
    }
}
