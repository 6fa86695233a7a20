//! Poison input against the real RabbitMQ: every kind ends in the DLQ on its first attempt with
//! a reason header, and the worker keeps consuming.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::types::AMQPValue;
use millrace_testkit::TestVhost;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_goes_to_the_dlq_on_first_attempt_and_the_worker_keeps_going() {
    let vhost = TestVhost::create("worker-poison").await;
    let dest = destination(|_| 200).await;
    let worker = start_worker(&vhost, config("plant-berlin", "poison", &dest.base)).await;
    let ch = confirm_channel(&vhost).await;
    let canonical = sink_queue(&ch, "canonical").await;

    let with_type = |id: &str, ty: &str| {
        let mut p = event_properties(id);
        let mut h = p.headers().clone().unwrap_or_default();
        h.insert("ce-type".into(), AMQPValue::LongString(ty.into()));
        p = p.with_headers(h);
        p
    };
    let mut huge = br#"{"orderId": "huge", "site": "berlin", "qty": 1, "pad": ""#.to_vec();
    huge.extend(std::iter::repeat_n(b'a', 10 * 1024 * 1024));
    huge.extend(br#""}"#);

    let cases: Vec<(&str, Vec<u8>, BasicProperties, &str)> = vec![
        (
            "invalid-json",
            b"{\"orderId\": ".to_vec(),
            event_properties("invalid-json"),
            "invalid_json",
        ),
        (
            "not-utf8",
            b"{\"orderId\": \"\xff\xfe\"}".to_vec(),
            event_properties("not-utf8"),
            "invalid_utf8",
        ),
        ("huge", huge, event_properties("huge"), "payload_too_large"),
        ("empty", Vec::new(), event_properties("empty"), "empty_body"),
        (
            "missing-field",
            br#"{"orderId": "A", "site": "berlin"}"#.to_vec(),
            event_properties("missing-field"),
            "contract_violation",
        ),
        (
            "wrong-type",
            br#"{"orderId": "A", "site": "berlin", "qty": "ten"}"#.to_vec(),
            event_properties("wrong-type"),
            "contract_violation",
        ),
        (
            "not-an-object",
            b"[1, 2, 3]".to_vec(),
            event_properties("not-an-object"),
            "contract_violation",
        ),
        // `tonumber` fails on this lot number inside the transform.
        (
            "jq-error",
            br#"{"orderId": "A", "site": "berlin", "qty": 3, "lot": "L-7"}"#.to_vec(),
            event_properties("jq-error"),
            "jq_error",
        ),
        // An unknown site has no plant: the output contract needs one.
        (
            "output-contract",
            event("A", "atlantis", 3.0),
            event_properties("output-contract"),
            "output_contract_violation",
        ),
        (
            "csv",
            b"orderId,site,qty\nA,berlin,1\n".to_vec(),
            event_properties("csv").with_content_type("text/csv".into()),
            "unsupported_content_type",
        ),
        (
            "wrong-type-header",
            event("A", "berlin", 3.0),
            with_type("wrong-type-header", "com.acme.other.v1"),
            "wrong_event_type",
        ),
    ];
    for (_, body, props, _) in &cases {
        publish(&ch, "production.completed.berlin", body, props.clone()).await;
    }
    // A good event after the poison: the worker must still deliver it.
    publish(
        &ch,
        "production.completed.berlin",
        &event("after-poison", "lyon", 5.0),
        event_properties("after-poison"),
    )
    .await;
    // A good event behind a UTF-8 byte-order mark, as SAP and .NET senders write it: delivered.
    let mut with_bom = b"\xEF\xBB\xBF".to_vec();
    with_bom.extend(event("with-bom", "lyon", 2.0));
    publish(
        &ch,
        "production.completed.berlin",
        &with_bom,
        event_properties("with-bom"),
    )
    .await;

    let delivered = collect(
        &ch,
        &canonical,
        2,
        Duration::from_secs(30),
        Duration::from_millis(500),
    )
    .await;
    let mut ids = message_ids(&delivered);
    ids.sort();
    assert_eq!(
        ids,
        ["after-poison", "with-bom"],
        "the good events after the poison"
    );

    let dlq = collect(
        &ch,
        "millrace.plant-berlin.poison.dlq",
        cases.len(),
        Duration::from_secs(30),
        Duration::from_secs(1),
    )
    .await;
    let by_id: BTreeMap<String, &Received> = dlq
        .iter()
        .map(|r| (r.header("ce-id").unwrap_or_default(), r))
        .collect();
    for (id, body, _, reason) in &cases {
        let Some(r) = by_id.get(*id) else {
            panic!(
                "{id} is not in the DLQ; the DLQ holds {:?}",
                by_id.keys().collect::<Vec<_>>()
            );
        };
        assert_eq!(
            r.header("x-millrace-reason").as_deref(),
            Some(*reason),
            "{id}"
        );
        assert_eq!(
            r.header("x-millrace-attempts").as_deref(),
            Some("1"),
            "{id}"
        );
        assert!(r.header("x-millrace-first-failure").is_some(), "{id}");
        assert!(
            r.header("x-millrace-last-error")
                .is_some_and(|e| !e.is_empty()),
            "{id}"
        );
        assert_eq!(
            r.header("x-millrace-flow").as_deref(),
            Some("plant-berlin/poison")
        );
        assert_eq!(&r.body, body, "{id}: the DLQ keeps the original bytes");
    }
    assert_eq!(
        dlq.len(),
        cases.len(),
        "each poison message dead-lettered once"
    );

    let flow = "plant-berlin/poison";
    let dead = metric(
        worker.addr,
        &format!(
            "millrace_events_dead_lettered_total{{flow=\"{flow}\",route=\"none\",reason=\"contract_violation\"}}"
        ),
    )
    .await;
    assert_eq!(dead, 3.0);
    let validation = metric(
        worker.addr,
        &format!(
            "millrace_validation_failures_total{{flow=\"{flow}\",route=\"none\",reason=\"output_contract_violation\"}}"
        ),
    )
    .await;
    assert_eq!(validation, 1.0);
    let retried = metric(
        worker.addr,
        &format!("millrace_events_retried_total{{flow=\"{flow}\",route=\"canonical\"}}"),
    )
    .await;
    assert_eq!(retried, 0.0, "poison is never retried");
    assert!(
        dest.recorded().is_empty(),
        "no poison reached the HTTP route"
    );
    worker.shutdown().await;
}
