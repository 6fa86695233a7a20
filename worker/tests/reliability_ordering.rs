//! Ordering: a flow with `ordering.key` and 4 partitions, run by two worker processes, keeps per-key
//! order at the destination for 5,000 events over 50 keys (each event carries its per-key sequence
//! number), also when the active worker is killed mid-stream and the other one takes over.
//!
//! Needs the local RabbitMQ (`make env-up`); fails when it is not up.

mod reliability_support;

use std::collections::BTreeMap;
use std::time::Duration;

use reliability_support::{
    Collectors, Fixture, FlowSpec, Seen, TestEvent, WorkerProcess, publish, wait_for,
};

const KEYS: u64 = 50;
const PER_KEY: u64 = 100;
const PARTITIONS: u32 = 4;
const ROUTES: &[&str] = &["erp"];

/// Keys interleave: event i has key i % 50 and sequence number i / 50 within its key.
fn events() -> Vec<TestEvent> {
    (0..KEYS * PER_KEY)
        .map(|i| TestEvent {
            id: format!("evt-{i:05}"),
            key: format!("order-{:02}", i % KEYS),
            seq: i / KEYS,
            poison: false,
        })
        .collect()
}

async fn ordered_flow(name: &'static str) -> Fixture {
    Fixture::create(FlowSpec {
        name,
        routes: ROUTES,
        partitions: Some(PARTITIONS),
        prefetch: 50,
    })
    .await
}

/// Checks per-key order of what arrived. Without redelivery every key must arrive as exactly
/// 0, 1, ..., 99. With redelivery (after a crash), a key may repeat sequence numbers it already
/// delivered, but each new one must be the next: no gap, no overtaking.
fn order_violations(delivered: &[Seen], redelivery_allowed: bool) -> Vec<String> {
    let mut per_key: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut failures = Vec::new();
    for s in delivered {
        match (&s.key, s.seq) {
            (Some(key), Some(seq)) => per_key.entry(key).or_default().push(seq),
            _ => failures.push(format!("a delivery without key or seq: {s:?}")),
        }
    }
    if per_key.len() != KEYS as usize {
        failures.push(format!("{} keys arrived, expected {KEYS}", per_key.len()));
    }
    for (key, seqs) in &per_key {
        let mut next = 0u64;
        for (position, &seq) in seqs.iter().enumerate() {
            if seq == next {
                next += 1;
            } else if !(redelivery_allowed && seq < next) {
                failures.push(format!(
                    "key {key}: arrival {position} is seq {seq}, expected {next}; arrivals: {:?}",
                    &seqs[position.saturating_sub(5)..(position + 5).min(seqs.len())]
                ));
                break;
            }
        }
        if next != PER_KEY {
            failures.push(format!(
                "key {key}: only seq 0..{next} of 0..{PER_KEY} arrived in order"
            ));
        }
        if !redelivery_allowed && seqs.len() as u64 != PER_KEY {
            failures.push(format!(
                "key {key}: {} deliveries for {PER_KEY} events although no worker died",
                seqs.len()
            ));
        }
    }
    failures
}

async fn report(collectors: &Collectors, workers: &[&WorkerProcess]) -> String {
    let mut lines = vec![format!("seen: {}", collectors.describe())];
    for (i, w) in workers.iter().enumerate() {
        lines.push(format!(
            "worker {i}: received {}, delivered {}",
            w.metric("millrace_events_received_total").await,
            w.metric("millrace_events_delivered_total").await
        ));
    }
    lines.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_holds_across_partitions_and_two_workers() {
    let fixture = ordered_flow("ordering").await;
    let events = events();
    let collectors = Collectors::start(&fixture.vhost.amqp_uri(), &fixture.watched_queues());
    let mut a = fixture.start_worker("worker-a");
    let mut b = fixture.start_worker("worker-b");
    a.wait_ready(Duration::from_secs(60)).await;
    b.wait_ready(Duration::from_secs(60)).await;

    publish(fixture.vhost.connection(), &events).await;
    let complete = wait_for(Duration::from_secs(180), || {
        collectors.distinct(ROUTES[0]) >= events.len()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.assert_running("after the stream");
    b.assert_running("after the stream");

    let seen = collectors.snapshot();
    let mut failures = order_violations(&seen[ROUTES[0]], false);
    if !complete {
        failures.push("not every event arrived within 180s".into());
    }
    let dead = collectors.distinct(&fixture.names.dead_letter_queue());
    if dead > 0 {
        failures.push(format!("{dead} events were dead-lettered"));
    }
    let summary = report(&collectors, &[&a, &b]).await;
    eprintln!("{summary}");
    assert!(
        failures.is_empty(),
        "{}\n{summary}\nworker-a log:\n{}\nworker-b log:\n{}",
        failures[..failures.len().min(20)].join("\n"),
        a.log_tail(30),
        b.log_tail(30)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_order_survives_killing_the_active_worker() {
    let fixture = ordered_flow("ordering-failover").await;
    let events = events();
    let collectors = Collectors::start(&fixture.vhost.amqp_uri(), &fixture.watched_queues());
    let mut a = fixture.start_worker("worker-a");
    let mut b = fixture.start_worker("worker-b");
    a.wait_ready(Duration::from_secs(60)).await;
    b.wait_ready(Duration::from_secs(60)).await;

    let publisher = {
        let uri = fixture.vhost.amqp_uri();
        let events = events.clone();
        tokio::spawn(async move {
            let connection = reliability_support::connect(&uri, "reliability publisher")
                .await
                .expect("publisher connection");
            publish(&connection, &events).await;
        })
    };
    let midway = wait_for(Duration::from_secs(120), || {
        collectors.distinct(ROUTES[0]) >= events.len() / 3
    })
    .await;
    assert!(
        midway,
        "a third of the events did not arrive within 120s\n{}",
        report(&collectors, &[&a, &b]).await
    );
    // Kill whichever worker is doing the work (single active consumer: usually one of them).
    let received_a = a.metric("millrace_events_received_total").await;
    let received_b = b.metric("millrace_events_received_total").await;
    let (victim, survivor) = if received_a >= received_b {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    victim.kill_hard();
    eprintln!(
        "killed the busier worker (received {received_a} / {received_b}) after {} deliveries",
        collectors.distinct(ROUTES[0])
    );

    tokio::time::timeout(Duration::from_secs(120), publisher)
        .await
        .expect("publishing took more than 120s")
        .expect("publisher failed");
    let complete = wait_for(Duration::from_secs(180), || {
        collectors.distinct(ROUTES[0]) >= events.len()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    survivor.assert_running("after the failover");

    let seen = collectors.snapshot();
    let mut failures = order_violations(&seen[ROUTES[0]], true);
    if !complete {
        failures.push("not every event arrived within 180s".into());
    }
    let summary = report(&collectors, &[survivor]).await;
    eprintln!("{summary}");
    assert!(
        failures.is_empty(),
        "{}\n{summary}\nsurviving worker's log:\n{}",
        failures[..failures.len().min(20)].join("\n"),
        survivor.log_tail(30)
    );
}
