//! Chained flows against the real RabbitMQ: flow A's AMQP routes feed flow B's source exchange.
//! A message arriving at B is a fresh event for B whatever Millrace headers it carries: a route
//! name of A that B also has, one that B lacks, and a producer's forged retry headers naming B
//! and one of its routes must all lead to delivery on every route B selects, exactly once.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use millrace_crds::worker_config::{
    ContractConfig, DestinationConfig, FlowConfig, RouteConfig, SourceConfig, WorkerConfig,
};
use millrace_testkit::TestVhost;
use serde_json::json;
use support::*;

/// The exchange A delivers to and B consumes from.
const CHAIN_EXCHANGE: &str = "chain.events";
const FLOW_A: &str = "plant-berlin/chain-a";
const FLOW_B: &str = "plant-berlin/chain-b";

/// A: `canonical` (qty <= 10) and `big` (qty > 10), both to the chain exchange. B: `canonical`
/// and `audit`, both always, to the sink exchange. `canonical` is a name both flows have; `big`
/// is A's only.
fn chained_config() -> WorkerConfig {
    let mut cfg = config("plant-berlin", "chain-a", "http://127.0.0.1:9");
    let mut a = cfg.flows.remove(0);
    let retry = a.routes[0].retry.clone();
    let route = |name: &str, when: Option<&str>, exchange: &str, key: &str| RouteConfig {
        name: name.into(),
        when: when.map(str::to_string),
        connection: "bus".into(),
        destination: DestinationConfig::Amqp {
            exchange: exchange.into(),
            routing_key: key.into(),
        },
        retry: retry.clone(),
    };
    a.routes = vec![
        route(
            "canonical",
            Some(".qty <= 10"),
            CHAIN_EXCHANGE,
            "a.canonical",
        ),
        route("big", Some(".qty > 10"), CHAIN_EXCHANGE, "a.big"),
    ];
    let b = FlowConfig {
        name: "chain-b".into(),
        source: SourceConfig::Amqp {
            connection: "bus".into(),
            exchange: CHAIN_EXCHANGE.into(),
            routing_keys: vec!["a.#".into(), "forged.#".into()],
        },
        contract: ContractConfig {
            name: "erp-confirmation".into(),
            version: 1,
            event_type: OUTPUT_TYPE.into(),
            schema: json!({
                "type": "object",
                "required": ["order", "qty"],
                "properties": {"order": {"type": "string"}, "qty": {"type": "number"}}
            }),
        },
        transform: None,
        routes: vec![
            route("canonical", None, SINK_EXCHANGE, "b.canonical"),
            route("audit", None, SINK_EXCHANGE, "b.audit"),
        ],
        delivery: millrace_crds::worker_config::DeliveryConfig {
            idempotency: None,
            ..a.delivery.clone()
        },
        archive_retention_ms: 0,
        ..a.clone()
    };
    cfg.flows = vec![a, b];
    cfg
}

/// A producer's message straight into B's source exchange, with Millrace's retry headers forged
/// to name B, its route `route` and the marker of a parked retry.
async fn publish_forged(ch: &Channel, order: &str, route: &str) {
    let mut h = FieldTable::default();
    let text = |s: &str| AMQPValue::LongString(s.into());
    h.insert("ce-id".into(), text(&format!("forged-{order}")));
    h.insert("ce-type".into(), text(OUTPUT_TYPE));
    h.insert("x-millrace-flow".into(), text(FLOW_B));
    h.insert("x-millrace-route".into(), text(route));
    h.insert("x-millrace-attempts".into(), AMQPValue::LongLongInt(2));
    h.insert(
        "x-millrace-first-failure".into(),
        text("2020-01-01T00:00:00.000Z"),
    );
    h.insert("x-millrace-retry-tier".into(), text("500"));
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_headers(h);
    let body = serde_json::to_vec(&json!({"order": order, "plant": "1000", "qty": 1})).unwrap();
    publish_to(ch, CHAIN_EXCHANGE, "forged.completed", &body, props).await;
}

/// Deliveries per order, and any delivery that carries retry state or the wrong provenance.
fn by_order(msgs: &[Received], route: &str) -> (BTreeMap<String, usize>, Vec<String>) {
    let mut count = BTreeMap::new();
    let mut wrong = Vec::new();
    for r in msgs {
        let order = r.json()["order"].as_str().unwrap_or_default().to_string();
        *count.entry(order.clone()).or_default() += 1;
        for internal in [
            "x-millrace-flow",
            "x-millrace-route",
            "x-millrace-attempts",
            "x-millrace-first-failure",
            "x-millrace-last-error",
            "x-millrace-retry-tier",
        ] {
            if let Some(v) = r.header(internal) {
                wrong.push(format!("{order}: {internal}={v}"));
            }
        }
        if r.header("x-millrace-from-flow").as_deref() != Some(FLOW_B)
            || r.header("x-millrace-from-route").as_deref() != Some(route)
        {
            wrong.push(format!(
                "{order}: from {:?}/{:?}",
                r.header("x-millrace-from-flow"),
                r.header("x-millrace-from-route")
            ));
        }
    }
    (count, wrong)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downstream_flow_routes_every_event_itself_whatever_millrace_headers_it_carries() {
    let vhost = TestVhost::create("worker-chain").await;
    let worker = start_worker(&vhost, chained_config()).await;
    let ch = confirm_channel(&vhost).await;
    let canonical = sink_queue(&ch, "b.canonical").await;
    let audit = sink_queue(&ch, "b.audit").await;

    let mut expected = Vec::new();
    for i in 0..5 {
        // Through A's `canonical`: a route name B also has.
        let small = format!("small-{i}");
        publish(
            &ch,
            "production.completed.berlin",
            &event(&small, "berlin", 3.0),
            event_properties(&format!("evt-{small}")),
        )
        .await;
        // Through A's `big`: a route name B does not have.
        let big = format!("big-{i}");
        publish(
            &ch,
            "production.completed.berlin",
            &event(&big, "berlin", 50.0),
            event_properties(&format!("evt-{big}")),
        )
        .await;
        // Forged retries of B: one naming a route B has, one naming a route it lacks.
        let forged = format!("forged-{i}");
        publish_forged(&ch, &forged, "audit").await;
        let stale = format!("stale-{i}");
        publish_forged(&ch, &stale, "erp").await;
        expected.extend([small, big, forged, stale]);
    }
    expected.sort();

    let n = expected.len();
    let got_canonical = collect(
        &ch,
        &canonical,
        n,
        Duration::from_secs(20),
        Duration::from_secs(2),
    )
    .await;
    let got_audit = collect(
        &ch,
        &audit,
        n,
        Duration::from_secs(10),
        Duration::from_secs(1),
    )
    .await;

    for (route, got) in [("canonical", &got_canonical), ("audit", &got_audit)] {
        let (count, wrong) = by_order(got, route);
        let missing: Vec<&String> = expected
            .iter()
            .filter(|o| !count.contains_key(*o))
            .collect();
        let repeated: Vec<(&String, &usize)> = count.iter().filter(|(_, k)| **k != 1).collect();
        assert!(
            missing.is_empty() && repeated.is_empty() && count.len() == n,
            "B's {route} route: missing {missing:?}, repeated {repeated:?}, got {count:?}"
        );
        assert!(wrong.is_empty(), "B's {route} deliveries: {wrong:?}");
    }

    // Nothing was filtered or dead-lettered on the way.
    let filtered = metric(
        worker.addr,
        &format!(
            "millrace_processing_duration_seconds_count{{flow=\"{FLOW_B}\",outcome=\"filtered\"}}"
        ),
    )
    .await;
    assert_eq!(filtered, 0.0, "B acknowledged events as filtered");
    for flow in ["chain-a", "chain-b"] {
        assert_eq!(
            queue_depth(&vhost, &format!("millrace.plant-berlin.{flow}.dlq")).await,
            Some(0),
            "{flow} dead-lettered events"
        );
    }
    assert_eq!(
        metric(
            worker.addr,
            &format!("millrace_events_delivered_total{{flow=\"{FLOW_A}\",route=\"big\"}}")
        )
        .await,
        5.0
    );
    worker.shutdown().await;
}
