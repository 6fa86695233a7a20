//! Happy path against the real RabbitMQ: two AMQP routes and one HTTP route; every event is
//! delivered once to each route whose predicate holds, with envelope headers and idempotency keys.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use millrace_testkit::TestVhost;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_each_matching_route_once() {
    let vhost = TestVhost::create("worker-happy").await;
    let dest = destination(|_| 200).await;
    let worker = start_worker(&vhost, config("plant-berlin", "production", &dest.base)).await;
    let ch = confirm_channel(&vhost).await;
    let canonical = sink_queue(&ch, "canonical").await;
    let big = sink_queue(&ch, "big").await;

    // 60 events: sites alternate berlin (plant 1000, goes to ERP) and lyon; qty 1..=60 (big > 10).
    let n = 60;
    let mut expect_big = BTreeSet::new();
    let mut expect_erp = BTreeSet::new();
    for i in 1..=n {
        let id = format!("order-{i:03}");
        let site = if i % 2 == 0 { "berlin" } else { "lyon" };
        if i > 10 {
            expect_big.insert(id.clone());
        }
        if site == "berlin" {
            expect_erp.insert(id.clone());
        }
        publish(
            &ch,
            "production.completed.berlin",
            &event(&id, site, i as f64),
            event_properties(&format!("evt-{i}")),
        )
        .await;
    }
    // One exact duplicate (same idempotency key): the dedupe window drops it on every route.
    publish(
        &ch,
        "production.completed.berlin",
        &event("order-002", "berlin", 2.0),
        event_properties("evt-2"),
    )
    .await;

    let got_canonical = collect(
        &ch,
        &canonical,
        n,
        Duration::from_secs(30),
        Duration::from_secs(2),
    )
    .await;
    let got_big = collect(
        &ch,
        &big,
        expect_big.len(),
        Duration::from_secs(30),
        Duration::from_secs(1),
    )
    .await;

    let ids = |msgs: &[Received]| -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in msgs {
            let id = r
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.to_string())
                .unwrap_or_default();
            *m.entry(id).or_default() += 1;
        }
        m
    };
    let c = ids(&got_canonical);
    assert_eq!(c.len(), n, "canonical got {c:?}");
    assert!(
        c.values().all(|&k| k == 1),
        "duplicates on canonical: {c:?}"
    );
    let b = ids(&got_big);
    assert_eq!(
        b.keys().cloned().collect::<BTreeSet<_>>(),
        expect_big,
        "big route"
    );
    assert!(b.values().all(|&k| k == 1), "duplicates on big: {b:?}");

    // Envelope and idempotency headers on AMQP deliveries.
    let sample = got_canonical
        .iter()
        .find(|r| r.properties.message_id().as_ref().map(|s| s.as_str()) == Some("order-007"))
        .expect("order-007 delivered");
    assert_eq!(sample.header("ce-id").as_deref(), Some("evt-7"));
    assert_eq!(sample.header("ce-type").as_deref(), Some(OUTPUT_TYPE));
    assert_eq!(sample.header("ce-source").as_deref(), Some("/mes/berlin"));
    assert_eq!(sample.header("ce-specversion").as_deref(), Some("1.0"));
    assert!(sample.header("ce-time").is_some());
    assert!(sample.header("ce-dataschema").is_some());
    assert_eq!(
        sample.header("traceparent").as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(
        sample.header("x-millrace-idempotency-key").as_deref(),
        Some("order-007")
    );
    assert_eq!(
        sample.header("x-millrace-from-route").as_deref(),
        Some("canonical")
    );
    assert_eq!(
        sample.header("x-millrace-from-flow").as_deref(),
        Some("plant-berlin/production")
    );
    assert_eq!(
        sample.header("x-millrace-route"),
        None,
        "retry state leaked"
    );
    let body = sample.json();
    assert_eq!(body["order"], "order-007");
    assert_eq!(body["plant"], "2000");
    assert_eq!(body["qty"].as_f64(), Some(7.0));
    assert_eq!(body["lot"].as_f64(), Some(0.0));

    // HTTP route: berlin events only, once each, with path, auth, envelope and idempotency key.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while dest.recorded().len() < expect_erp.len() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let recorded = dest.recorded();
    let mut erp = BTreeMap::new();
    for r in &recorded {
        let key = r
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert_eq!(r.path, format!("/api/confirmations/{key}"));
        assert_eq!(
            r.headers.get("authorization").and_then(|v| v.to_str().ok()),
            Some("Bearer erp-token")
        );
        assert_eq!(
            r.headers.get("ce-type").and_then(|v| v.to_str().ok()),
            Some(OUTPUT_TYPE)
        );
        assert!(r.headers.get("ce-id").is_some());
        assert!(r.headers.get("traceparent").is_some());
        *erp.entry(key).or_insert(0) += 1;
    }
    assert_eq!(
        erp.keys().cloned().collect::<BTreeSet<_>>(),
        expect_erp,
        "erp route"
    );
    assert!(erp.values().all(|&k| k == 1), "duplicates on erp: {erp:?}");

    // Metrics tell the same story; nothing was dead-lettered.
    let flow = "plant-berlin/production";
    assert_eq!(
        metric(
            worker.addr,
            &format!("millrace_events_received_total{{flow=\"{flow}\"}}")
        )
        .await,
        (n + 1) as f64
    );
    assert_eq!(
        metric(
            worker.addr,
            &format!("millrace_events_delivered_total{{flow=\"{flow}\",route=\"canonical\"}}")
        )
        .await,
        n as f64
    );
    assert_eq!(
        metric(
            worker.addr,
            &format!("millrace_events_deduplicated_total{{flow=\"{flow}\",route=\"canonical\"}}")
        )
        .await,
        1.0
    );
    assert_eq!(
        queue_depth(&vhost, "millrace.plant-berlin.production.dlq").await,
        Some(0)
    );
    worker.shutdown().await;
}
