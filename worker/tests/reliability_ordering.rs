//! Ordering: a flow with `ordering.key` and 4 partitions, run by two worker processes, keeps per-key
//! order at the destination for 5,000 events over 50 keys (each event carries its per-key sequence
//! number).
//!
//! Needs the local RabbitMQ (`make env-up`); fails when it is not up.

mod reliability_support;

use std::collections::BTreeMap;
use std::time::Duration;

use reliability_support::{Collectors, Fixture, FlowSpec, TestEvent, publish, wait_for};

const KEYS: u64 = 50;
const PER_KEY: u64 = 100;
const PARTITIONS: u32 = 4;
const ROUTES: &[&str] = &["erp"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_holds_across_partitions_and_two_workers() {
    let fixture = Fixture::create(FlowSpec {
        name: "ordering",
        routes: ROUTES,
        partitions: Some(PARTITIONS),
        prefetch: 50,
    })
    .await;
    // Keys interleave: event i has key i % 50 and sequence number i / 50 within its key.
    let events: Vec<TestEvent> = (0..KEYS * PER_KEY)
        .map(|i| TestEvent {
            id: format!("evt-{i:05}"),
            key: format!("order-{:02}", i % KEYS),
            seq: i / KEYS,
            poison: false,
        })
        .collect();

    let collectors = Collectors::start(&fixture.vhost.amqp_uri(), &fixture.watched_queues());
    let mut a = fixture.start_worker("worker-a");
    let mut b = fixture.start_worker("worker-b");
    a.wait_ready(Duration::from_secs(60)).await;
    b.wait_ready(Duration::from_secs(60)).await;

    publish(fixture.vhost.connection(), &events).await;
    let total = events.len();
    let complete = wait_for(Duration::from_secs(180), || {
        collectors.distinct(ROUTES[0]) >= total
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.assert_running("after the stream");
    b.assert_running("after the stream");

    let seen = collectors.snapshot();
    let delivered = &seen[ROUTES[0]];
    let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for s in delivered {
        match (&s.key, s.seq) {
            (Some(key), Some(seq)) => per_key.entry(key.clone()).or_default().push(seq),
            _ => unreadable.push(s.clone()),
        }
    }
    let mut failures = Vec::new();
    if !complete {
        failures.push(format!(
            "only {} of {total} events arrived within 180s",
            collectors.distinct(ROUTES[0])
        ));
    }
    if !unreadable.is_empty() {
        failures.push(format!(
            "{} deliveries without key/seq, e.g. {:?}",
            unreadable.len(),
            unreadable.first()
        ));
    }
    if per_key.len() != KEYS as usize {
        failures.push(format!("{} keys arrived, expected {KEYS}", per_key.len()));
    }
    for (key, seqs) in &per_key {
        // No process dies here, so there is no reason for a redelivery: order must be exact.
        let expected: Vec<u64> = (0..PER_KEY).collect();
        if *seqs != expected {
            let first_break = seqs
                .windows(2)
                .position(|w| w[1] != w[0] + 1)
                .map(|i| format!("{} then {}", seqs[i], seqs[i + 1]));
            failures.push(format!(
                "key {key}: {} events arrived out of order or incomplete (first break: {}); arrival: {:?}",
                seqs.len(),
                first_break.unwrap_or_else(|| "none".into()),
                &seqs[..seqs.len().min(20)]
            ));
        }
    }
    let dead = collectors.distinct(&fixture.names.dead_letter_queue());
    if dead > 0 {
        failures.push(format!("{dead} events were dead-lettered"));
    }
    let received_a = a.metric("millrace_events_received_total").await;
    let received_b = b.metric("millrace_events_received_total").await;
    let summary = format!(
        "seen: {}; received by worker-a {received_a}, worker-b {received_b}",
        collectors.describe()
    );
    eprintln!("{summary}");
    assert!(
        failures.is_empty(),
        "{}\n{summary}\nworker-a log:\n{}\nworker-b log:\n{}",
        failures[..failures.len().min(20)].join("\n"),
        a.log_tail(30),
        b.log_tail(30)
    );
}
