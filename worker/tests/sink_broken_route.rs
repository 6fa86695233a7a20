//! One broken AMQP route against the real RabbitMQ: a flow delivers to three exchanges, and one
//! of them is deleted while events flow. The broker closes the channel of every publish to the
//! missing exchange (404); the two healthy routes must not notice (no retries, no delay, every
//! event once), while the broken route's events are retried and dead-lettered with the 404 as
//! their last error.

mod support;

use std::time::{Duration, Instant};

use lapin::Channel;
use lapin::options::ExchangeDeleteOptions;
use millrace_crds::common::Backoff;
use millrace_crds::worker_config::{DestinationConfig, RetryConfig, RouteConfig};
use millrace_testkit::TestVhost;
use support::*;

const HEALTHY: [&str; 2] = ["alpha", "beta"];
const BROKEN: &str = "gamma";

/// Declares exchange `sink.<route>` with a queue bound to everything; returns the queue name.
async fn route_queue(ch: &Channel, route: &str) -> String {
    bound_queue(
        ch,
        &format!("sink.{route}"),
        "#",
        &format!("test.sink.{route}"),
    )
    .await
}

/// Waits until `queue` holds `n` messages or `timeout` passes; returns the last depth seen.
async fn wait_depth(vhost: &TestVhost, queue: &str, n: u32, timeout: Duration) -> u32 {
    let deadline = Instant::now() + timeout;
    loop {
        let depth = queue_depth(vhost, queue).await.unwrap_or(0);
        if depth >= n || Instant::now() >= deadline {
            return depth;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn publish_events(ch: &Channel, from: usize, to: usize) {
    for i in from..to {
        publish(
            ch,
            "production.completed.lyon",
            &event(&format!("o-{i}"), "lyon", 3.0),
            event_properties(&format!("e-{i}")),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_exchange_fails_only_its_own_route() {
    let vhost = TestVhost::create("worker-broken-route").await;
    let mut cfg = config("plant-lyon", "fanout", "http://127.0.0.1:9/unused");
    let flow = &mut cfg.flows[0];
    flow.delivery.retry_tiers_ms = vec![500, 1_000];
    let retry = RetryConfig {
        max_attempts: 3,
        backoff: Backoff::Exponential,
        initial_delay_ms: 500,
        max_delay_ms: 1_000,
    };
    flow.routes = HEALTHY
        .iter()
        .chain([&BROKEN])
        .map(|name| RouteConfig {
            name: name.to_string(),
            when: None,
            connection: "bus".into(),
            destination: DestinationConfig::Amqp {
                exchange: format!("sink.{name}"),
                routing_key: name.to_string(),
            },
            retry: retry.clone(),
        })
        .collect();
    let label = "plant-lyon/fanout";
    let dlq = "millrace.plant-lyon.fanout.dlq";

    let ch = confirm_channel(&vhost).await;
    let mut queues = Vec::new();
    for route in HEALTHY.iter().chain([&BROKEN]) {
        queues.push(route_queue(&ch, route).await);
    }
    let worker = start_worker(&vhost, cfg).await;

    // Warm up: every route delivers, so every route's channel is open and busy.
    let warm_up = 30;
    publish_events(&ch, 0, warm_up).await;
    for queue in &queues {
        let depth = wait_depth(&vhost, queue, warm_up as u32, Duration::from_secs(15)).await;
        assert_eq!(depth, warm_up as u32, "warm-up deliveries in {queue}");
    }

    ch.exchange_delete(
        format!("sink.{BROKEN}").as_str().into(),
        ExchangeDeleteOptions::default(),
    )
    .await
    .unwrap();
    let n = 300;
    let published = Instant::now();
    publish_events(&ch, warm_up, warm_up + n).await;

    // The healthy routes take every event once, without waiting for the broken one.
    let total = (warm_up + n) as u32;
    let mut depths = Vec::new();
    for queue in &queues[..HEALTHY.len()] {
        depths.push(wait_depth(&vhost, queue, total, Duration::from_secs(30)).await);
    }
    let healthy_done = published.elapsed();

    // The broken route's events are retried, then dead-lettered.
    let dead = wait_depth(&vhost, dlq, n as u32, Duration::from_secs(30)).await;
    let letters = collect(&ch, dlq, n, Duration::from_secs(10), Duration::from_secs(1)).await;
    let retried = |route: String| {
        let addr = worker.addr;
        async move {
            metric(
                addr,
                &format!("millrace_events_retried_total{{flow=\"{label}\",route=\"{route}\"}}"),
            )
            .await
        }
    };
    let mut healthy_retries = Vec::new();
    for route in HEALTHY {
        healthy_retries.push((route, retried(route.to_string()).await));
    }
    let broken_retries = retried(BROKEN.to_string()).await;
    let sample = letters
        .first()
        .map(|l| {
            format!(
                "route={:?} reason={:?} attempts={:?} error={:?}",
                l.header("x-millrace-route"),
                l.header("x-millrace-reason"),
                l.properties
                    .headers()
                    .as_ref()
                    .and_then(|h| h.inner().get("x-millrace-attempts").cloned()),
                l.header("x-millrace-last-error"),
            )
        })
        .unwrap_or_default();
    let seen = format!(
        "healthy depths {depths:?}, healthy retries {healthy_retries:?}, broken retries \
         {broken_retries}, healthy routes done after {healthy_done:?}, dlq depth {dead}, first \
         dead letter: {sample}"
    );

    for (route, count) in &healthy_retries {
        assert_eq!(*count, 0.0, "route {route} was retried; {seen}");
    }
    // A retry waits at least one 500 ms tier; a healthy route that took no retry finishes in
    // about the time the events took to publish.
    assert!(
        healthy_done < Duration::from_secs(15),
        "the healthy routes were held back; {seen}"
    );
    assert!(
        broken_retries >= n as f64,
        "every broken event is retried; {seen}"
    );
    assert_eq!(letters.len(), n, "dead letters; {seen}");
    for letter in &letters {
        assert_eq!(
            letter.header("x-millrace-route").as_deref(),
            Some(BROKEN),
            "{seen}"
        );
        assert_eq!(
            letter.header("x-millrace-reason").as_deref(),
            Some("retries_exhausted"),
            "{seen}"
        );
        let error = letter.header("x-millrace-last-error").unwrap_or_default();
        assert!(
            error.contains("sink.gamma"),
            "the last error names the exchange: {error:?}; {seen}"
        );
    }
    // A publish may still race the close of a channel another one broke; most name the 404.
    let not_found = letters
        .iter()
        .filter(|l| {
            l.header("x-millrace-last-error")
                .is_some_and(|e| e.contains("NOT_FOUND"))
        })
        .count();
    assert!(
        not_found * 2 >= letters.len(),
        "{not_found} of {} dead letters name the 404; {seen}",
        letters.len()
    );
    // The healthy routes got every event, and nothing twice.
    for (route, queue) in HEALTHY.iter().zip(&queues) {
        let got = collect(
            &ch,
            queue,
            total as usize,
            Duration::from_secs(10),
            Duration::ZERO,
        )
        .await;
        let mut keys: Vec<String> = got
            .iter()
            .map(|m| m.header("x-millrace-idempotency-key").unwrap_or_default())
            .collect();
        keys.sort();
        let all = keys.len();
        keys.dedup();
        assert_eq!(
            (all, keys.len()),
            (total as usize, total as usize),
            "route {route}: (messages, distinct events); {seen}"
        );
    }
    worker.shutdown().await;
}
