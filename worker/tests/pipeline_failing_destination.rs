//! A failing destination against the real RabbitMQ: the HTTP route answers 503 for 20 s, then
//! 200. Its events are retried through the delay tiers with growing delays, then delivered; the
//! AMQP routes are neither delayed nor repeated.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use millrace_crds::common::Backoff;
use millrace_crds::worker_config::RetryConfig;
use millrace_testkit::TestVhost;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_outage_is_retried_with_growing_delays_and_amqp_routes_flow_on() {
    let vhost = TestVhost::create("worker-outage").await;
    let outage = Duration::from_secs(20);
    let dest = destination(move |started| if started.elapsed() < outage { 503 } else { 200 }).await;
    let mut cfg = config("plant-berlin", "outage", &dest.base);
    let flow = &mut cfg.flows[0];
    flow.delivery.retry_tiers_ms = vec![1_000, 2_000, 4_000, 8_000];
    for route in &mut flow.routes {
        route.retry = RetryConfig {
            max_attempts: 12,
            backoff: Backoff::Exponential,
            initial_delay_ms: 1_000,
            max_delay_ms: 8_000,
        };
    }
    let worker = start_worker(&vhost, cfg).await;
    let ch = confirm_channel(&vhost).await;
    let canonical = sink_queue(&ch, "canonical").await;

    let started = Instant::now();
    let n = 10;
    for i in 0..n {
        // All berlin: every event also goes to the failing HTTP route.
        publish(
            &ch,
            "production.completed.berlin",
            &event(&format!("o-{i}"), "berlin", 3.0),
            event_properties(&format!("e-{i}")),
        )
        .await;
    }

    // The AMQP route is not held back by the outage: everything arrives within seconds, once.
    let got = collect(
        &ch,
        &canonical,
        n,
        Duration::from_secs(10),
        Duration::from_secs(1),
    )
    .await;
    let amqp_done = started.elapsed();
    assert_eq!(got.len(), n, "canonical deliveries during the outage");
    assert!(
        amqp_done < Duration::from_secs(8),
        "AMQP route took {amqp_done:?}, it must not wait for the HTTP route"
    );

    // Wait for the HTTP route to recover and deliver everything.
    let deadline = Instant::now() + Duration::from_secs(60);
    let delivered = |d: &Destination| {
        let mut ok: BTreeMap<String, usize> = BTreeMap::new();
        for r in d.recorded().iter().filter(|r| r.status == 200) {
            let key = r
                .headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            *ok.entry(key).or_default() += 1;
        }
        ok
    };
    while delivered(&dest).len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ok = delivered(&dest);
    assert_eq!(ok.len(), n, "HTTP deliveries after the outage: {ok:?}");
    assert!(
        ok.values().all(|&k| k == 1),
        "one success per event: {ok:?}"
    );
    assert!(
        started.elapsed() >= outage,
        "delivered before the outage ended?"
    );

    // Attempts of one event come with growing gaps (1 s, 2 s, 4 s, 8 s tiers).
    let attempts: Vec<Instant> = dest
        .recorded()
        .iter()
        .filter(|r| {
            r.headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                == Some("o-0")
        })
        .map(|r| r.at)
        .collect();
    assert!(attempts.len() >= 4, "o-0 attempts: {}", attempts.len());
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[0] >= Duration::from_millis(900),
        "first retry came after {:?}",
        gaps[0]
    );
    for w in gaps.windows(2) {
        assert!(
            w[1] + Duration::from_millis(500) >= w[0],
            "delays must not shrink: {gaps:?}"
        );
    }
    assert!(
        gaps.iter().any(|g| *g >= Duration::from_millis(3_500)),
        "delays grow: {gaps:?}"
    );

    // The AMQP route was not repeated by the HTTP retries.
    let extra = collect(&ch, &canonical, 0, Duration::from_secs(1), Duration::ZERO).await;
    assert!(extra.is_empty(), "canonical got {} repeats", extra.len());
    let label = "plant-berlin/outage";
    assert_eq!(
        metric(
            worker.addr,
            &format!("millrace_events_delivered_total{{flow=\"{label}\",route=\"canonical\"}}")
        )
        .await,
        n as f64
    );
    assert!(
        metric(
            worker.addr,
            &format!("millrace_events_retried_total{{flow=\"{label}\",route=\"erp\"}}")
        )
        .await
            >= (3 * n) as f64
    );
    assert_eq!(
        queue_depth(&vhost, "millrace.plant-berlin.outage.dlq").await,
        Some(0)
    );
    worker.shutdown().await;
}
