//! Reliability contract: a broker restart mid-stream loses nothing, and the worker resumes by itself.
//!
//! This stops and starts the RabbitMQ application (`rabbitmqctl stop_app`, `start_app`), which
//! disturbs every other user of the broker, so it lives in its own test binary and keeps the outage
//! short. Needs the local RabbitMQ (`make env-up`) and `rabbitmqctl`; fails when either is missing.

mod reliability_support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use reliability_support::{
    Collectors, Fixture, FlowSpec, TestEvent, by_id, connect, publish, wait_for,
};

/// Events queued before the worker starts; enough that it is still busy with them when the broker
/// stops (a debug-build worker delivers a few thousand per second).
const BEFORE: u64 = 20_000;
/// Events published after the broker is back.
const AFTER: u64 = 2_000;
const PREFETCH: u16 = 100;
const ROUTES: &[&str] = &["erp"];

/// Runs `rabbitmqctl ARGS`, bounded by `timeout`, panicking with its output on failure.
fn rabbitmqctl(args: &[&str], timeout: Duration) {
    let mut command = Command::new("rabbitmqctl");
    command.args(args);
    if args.first() == Some(&"await_startup") {
        command.args(["--timeout", &timeout.as_secs().to_string()]);
    }
    let output = command.output().unwrap_or_else(|e| {
        panic!("running rabbitmqctl {args:?}: {e}; this test needs rabbitmqctl (`make env-up`)")
    });
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts the broker application again if the test stops half-way, so that one failure does not leave
/// the shared broker down.
struct RestartOnDrop {
    armed: bool,
}

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        if self.armed {
            eprintln!("restarting the RabbitMQ application after a failure");
            let _ = Command::new("rabbitmqctl").arg("start_app").status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_loses_nothing() {
    let fixture = Fixture::create(FlowSpec {
        name: "broker-restart",
        routes: ROUTES,
        partitions: None,
        prefetch: PREFETCH,
    })
    .await;
    let uri = fixture.vhost.amqp_uri();
    let events: Vec<TestEvent> = (0..BEFORE + AFTER)
        .map(|i| TestEvent {
            id: format!("evt-{i:05}"),
            key: format!("K{:02}", i % 20),
            seq: i,
            poison: false,
        })
        .collect();
    let (before, after) = events.split_at(BEFORE as usize);

    // Queue the first events before the worker starts, so that how fast it is does not decide
    // whether the outage comes mid-stream: it starts from a backlog and the broker stops as soon as
    // deliveries flow.
    fixture.declare_flow_topology().await;
    publish(fixture.vhost.connection(), before).await;
    let collectors = Collectors::start(&uri, &fixture.watched_queues());
    let mut worker = fixture.start_worker("worker");
    worker.wait_ready(Duration::from_secs(60)).await;
    let moving = wait_for(Duration::from_secs(60), || {
        collectors.distinct(ROUTES[0]) >= 200
    })
    .await;
    assert!(
        moving,
        "the worker delivered nothing within 60s; seen: {}\n{}",
        collectors.describe(),
        worker.log_tail(30)
    );

    let mut guard = RestartOnDrop { armed: true };
    let stopped_at = Instant::now();
    rabbitmqctl(&["stop_app"], Duration::from_secs(60));
    let delivered_at_stop = collectors.distinct(ROUTES[0]);
    eprintln!("broker stopped with {delivered_at_stop} of {BEFORE} events delivered");
    if delivered_at_stop >= before.len() {
        rabbitmqctl(&["start_app"], Duration::from_secs(120));
        guard.armed = false;
        panic!(
            "the worker had delivered all {BEFORE} events before the broker stopped, so the restart \
             was not mid-stream; raise BEFORE"
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    worker.assert_running("while the broker was down");
    rabbitmqctl(&["start_app"], Duration::from_secs(120));
    rabbitmqctl(&["await_startup"], Duration::from_secs(120));
    guard.armed = false;
    eprintln!(
        "broker back after {:.1}s",
        stopped_at.elapsed().as_secs_f64()
    );

    // The test's own connection died with the broker; publish the rest on a new one.
    let deadline = Instant::now() + Duration::from_secs(30);
    let connection = loop {
        match connect(&uri, "reliability publisher").await {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("reconnecting the publisher: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("cannot reconnect to the broker after its restart: {e}"),
        }
    };
    publish(&connection, after).await;

    let complete = wait_for(Duration::from_secs(180), || {
        collectors.distinct(ROUTES[0]) >= events.len()
    })
    .await;
    worker.assert_running("after the broker restart");
    worker.wait_ready(Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let seen = collectors.snapshot();
    let ids = by_id(&seen[ROUTES[0]]);
    let delivered: BTreeSet<&str> = ids.keys().copied().collect();
    let missing: Vec<&str> = events
        .iter()
        .map(|e| e.id.as_str())
        .filter(|id| !delivered.contains(id))
        .collect();
    // Copies the worker published again. A message the broker redelivers to the collector (its ack
    // was lost when the broker stopped) is the same message seen twice, not a duplicate.
    let extra_copies: usize = ids
        .values()
        .map(|copies| {
            copies
                .iter()
                .filter(|s| !s.redelivered)
                .count()
                .saturating_sub(1)
        })
        .sum();
    let seen_again = seen[ROUTES[0]].iter().filter(|s| s.redelivered).count();
    let dead = collectors.distinct(&fixture.names.dead_letter_queue());
    let summary = format!(
        "seen: {}; {extra_copies} extra copies published by the worker; {seen_again} redelivered to the collector",
        collectors.describe()
    );
    eprintln!("{summary}");
    assert!(
        complete && missing.is_empty(),
        "{} events missing after the broker restart, e.g. {:?}\n{summary}\nworker log:\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        worker.log_tail(40)
    );
    assert_eq!(
        dead, 0,
        "broker trouble is transient, yet {dead} events were dead-lettered\n{summary}"
    );
    assert!(
        extra_copies <= usize::from(PREFETCH) * 2,
        "{extra_copies} duplicates, more than the in-flight window allows\n{summary}"
    );
}
