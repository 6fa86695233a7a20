//! Bounded work per message against the real RabbitMQ: a flow whose transform may loop runs off
//! the async threads within `--transform-budget-ms`. An event that makes it loop is
//! dead-lettered with `transform_budget_exceeded`, the events around it are delivered, and
//! `/healthz` keeps answering while the abandoned run still spins.
//!
//! Were the transform run on the executor, the looping event would hold its thread for good:
//! the later event would not be delivered in time, and no dead-letter would be written.

mod support;

use std::time::Duration;

use millrace_crds::worker_config::TransformConfig;
use millrace_testkit::TestVhost;
use support::*;

const FLOW: &str = "budget";
const MAIN: &str = "millrace.plant-berlin.budget";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_looping_transform_is_dead_lettered_over_budget_and_the_worker_stays_healthy() {
    let vhost = TestVhost::create("worker-budget").await;
    let ch = confirm_channel(&vhost).await;
    let dest = destination(|_| 200).await;
    let mut config = config("plant-berlin", FLOW, &dest.base);
    let transform = config.flows[0].transform.as_mut().unwrap();
    let projection = transform.jq.clone().unwrap();
    // `range` makes the program one that may loop; only the order "spin" ever does.
    *transform = TransformConfig {
        jq: Some(format!(
            "if .orderId == \"spin\" then last(range(1e15)) else ({projection}) end"
        )),
        ..transform.clone()
    };
    let worker = start_worker(&vhost, config).await;
    let canonical = sink_queue(&ch, "canonical").await;

    for order in ["before", "spin", "after"] {
        publish(
            &ch,
            "production.completed.berlin",
            &event(order, "lyon", 2.0),
            event_properties(order),
        )
        .await;
    }

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
        ["after", "before"],
        "the events around the loop arrive"
    );
    the_dead_letter(
        &ch,
        MAIN,
        "transform_budget_exceeded",
        "--transform-budget-ms",
    )
    .await;

    // The abandoned run still spins on its own thread; the server does not notice. (Were it
    // on the executor, this request would wait for good.)
    let health = tokio::time::timeout(
        Duration::from_secs(10),
        reqwest::get(format!("http://{}/healthz", worker.addr)),
    )
    .await
    .expect("/healthz answers while the runaway spins")
    .expect("/healthz answers");
    assert!(health.status().is_success(), "{}", health.status());
    assert_eq!(
        metric(worker.addr, "millrace_transform_runaways").await,
        1.0,
        "the runaway is counted"
    );
    worker.shutdown().await;
}
