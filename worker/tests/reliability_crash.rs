//! Reliability contract: `kill -9` of a worker mid-stream loses nothing. Every event received is
//! either delivered to every route or dead-lettered, counted by message id; duplicates are bounded by
//! the in-flight window and carry the same id.
//!
//! Needs the local RabbitMQ (`make env-up`); fails when it is not up.

mod reliability_support;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use reliability_support::{
    Collectors, Fixture, FlowSpec, TestEvent, by_id, connect, publish, wait_for,
};

const EVENTS: u64 = 20_000;
const PREFETCH: u16 = 100;
const ROUTES: &[&str] = &["erp", "canonical"];

fn events() -> Vec<TestEvent> {
    (0..EVENTS)
        .map(|i| TestEvent {
            id: format!("evt-{i:06}"),
            key: format!("K{:02}", i % 50),
            seq: i,
            // One in 250 breaks the contract and must end in the dead-letter queue.
            poison: i % 250 == 7,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_nothing() {
    let fixture = Fixture::create(FlowSpec {
        name: "crash",
        routes: ROUTES,
        partitions: None,
        prefetch: PREFETCH,
    })
    .await;
    let uri = fixture.vhost.amqp_uri();
    let dlq = fixture.names.dead_letter_queue();
    let events = events();
    let poison: BTreeSet<String> = events
        .iter()
        .filter(|e| e.poison)
        .map(|e| e.id.clone())
        .collect();
    let good: BTreeSet<String> = events
        .iter()
        .filter(|e| !e.poison)
        .map(|e| e.id.clone())
        .collect();

    let collectors = Collectors::start(&uri, &fixture.watched_queues());
    let mut first = fixture.start_worker("worker-1");
    first.wait_ready(Duration::from_secs(60)).await;

    let publisher = {
        let uri = uri.clone();
        let events = events.clone();
        tokio::spawn(async move {
            let connection = connect(&uri, "reliability publisher")
                .await
                .expect("publisher connection");
            publish(&connection, &events).await;
        })
    };

    // Kill at a random point of the stream, measured in events already delivered.
    let kill_at = rand::random_range(EVENTS as usize / 10..EVENTS as usize * 8 / 10);
    let reached = wait_for(Duration::from_secs(180), || {
        collectors.distinct(ROUTES[0]) >= kill_at
    })
    .await;
    first.assert_running("before the kill");
    assert!(
        reached,
        "the worker did not deliver {kill_at} events within 180s; seen: {}\nworker log:\n{}",
        collectors.describe(),
        first.log_tail(40)
    );
    first.kill_hard();
    eprintln!(
        "killed worker-1 (kill -9) after {kill_at} events; seen: {}",
        collectors.describe()
    );
    // Everything the dead worker published counts as "before the restart": wait until the
    // collectors have drained the route queues (nothing else publishes to them meanwhile).
    assert!(
        collectors
            .settle(&uri, ROUTES, Duration::from_secs(60))
            .await,
        "the collectors did not drain the route queues within 60s after the kill; seen: {}",
        collectors.describe()
    );
    let seen_before_restart: Vec<usize> = ROUTES
        .iter()
        .map(|r| collectors.snapshot()[*r].len())
        .collect();

    let mut second = fixture.start_worker("worker-2");
    second.wait_ready(Duration::from_secs(60)).await;
    tokio::time::timeout(Duration::from_secs(180), publisher)
        .await
        .expect("publishing 20,000 events took more than 180s")
        .expect("publisher failed");

    let complete = wait_for(Duration::from_secs(240), || {
        ROUTES.iter().all(|r| collectors.distinct(r) >= good.len())
            && collectors.distinct(&dlq) >= poison.len()
    })
    .await;
    // Late duplicates would show up shortly after; give them the chance to.
    tokio::time::sleep(Duration::from_secs(2)).await;
    second.assert_running("after the restart");
    let seen = collectors.snapshot();
    let mut report = vec![format!(
        "kill at {kill_at} delivered events; seen: {}",
        collectors.describe()
    )];
    let mut failures = Vec::new();
    if !complete {
        failures.push("not every event was accounted for within 240s".to_string());
    }

    // received = delivered + dead-lettered, by id.
    let dead: HashSet<&str> = seen[&dlq].iter().map(|s| s.id.as_str()).collect();
    let dead_ids: BTreeSet<String> = dead.iter().map(|s| s.to_string()).collect();
    if dead_ids != poison {
        let missing: Vec<_> = poison.difference(&dead_ids).take(10).collect();
        let extra: Vec<_> = dead_ids.difference(&poison).take(10).collect();
        failures.push(format!(
            "dead-letter queue: {} ids, expected the {} poison ids; missing {missing:?}, unexpected {extra:?}",
            dead_ids.len(),
            poison.len()
        ));
    }
    if let Some(s) = seen[&dlq].iter().find(|s| s.reason.is_none()) {
        failures.push(format!("dead-letter without a reason header: {s:?}"));
    }
    for (route, before_restart) in ROUTES.iter().zip(&seen_before_restart) {
        let messages = &seen[*route];
        let ids = by_id(messages);
        let delivered: BTreeSet<String> = ids.keys().map(|s| s.to_string()).collect();
        let missing: Vec<_> = good.difference(&delivered).collect();
        let unexpected: Vec<_> = delivered.difference(&good).collect();
        if !missing.is_empty() {
            failures.push(format!(
                "route {route}: {} ids missing, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(10)]
            ));
        }
        if !unexpected.is_empty() {
            failures.push(format!(
                "route {route}: {} ids that should have been dead-lettered or never existed, e.g. {:?}",
                unexpected.len(),
                &unexpected[..unexpected.len().min(10)]
            ));
        }
        let duplicates: Vec<(&str, usize)> = ids
            .iter()
            .filter(|(_, copies)| copies.len() > 1)
            .map(|(id, copies)| (*id, copies.len()))
            .collect();
        let extra_copies: usize = duplicates.iter().map(|(_, n)| n - 1).sum();
        report.push(format!(
            "route {route}: {} messages, {} ids, {} duplicated ids ({extra_copies} extra copies)",
            messages.len(),
            ids.len(),
            duplicates.len()
        ));
        if extra_copies > usize::from(PREFETCH) {
            failures.push(format!(
                "route {route}: {extra_copies} extra copies, more than the in-flight window of {PREFETCH}"
            ));
        }
        for (id, _) in &duplicates {
            let copies = &ids[id];
            let message_ids: HashSet<Option<&str>> =
                copies.iter().map(|s| s.message_id.as_deref()).collect();
            if message_ids.len() != 1 || message_ids.contains(&None) {
                failures.push(format!(
                    "route {route}: copies of {id} carry different message ids: {message_ids:?}"
                ));
            }
            // A duplicate is an event the killed worker delivered but could not ack: its first copy
            // arrived before the restart.
            let first = messages.iter().position(|s| s.id == *id).expect("present");
            if first >= *before_restart {
                failures.push(format!(
                    "route {route}: {id} was duplicated although its first copy came after the restart \
                     (position {first}, {before_restart} messages before the restart)"
                ));
            }
        }
    }
    for route in ROUTES {
        if let Some(s) = seen[*route]
            .iter()
            .find(|s| s.message_id.as_deref() != Some(s.id.as_str()))
        {
            failures.push(format!(
                "route {route}: a delivery does not carry the event id as its message_id: {s:?}"
            ));
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "{}\n{}\nwarnings of worker-1:\n{}\nwarnings of worker-2:\n{}\nlog of worker-2:\n{}",
        failures.join("\n"),
        report.join("\n"),
        first.log_warnings(20),
        second.log_warnings(20),
        second.log_tail(20)
    );
}
