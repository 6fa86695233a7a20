//! Bounded redeliveries against the real RabbitMQ: a message the broker has delivered
//! `--max-redeliveries` times is dead-lettered without running the pipeline, and a main queue
//! declared by an earlier release (without the delivery guard) is still consumed.

mod support;

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use millrace_testkit::TestVhost;
use support::*;

const FLOW: &str = "redeliveries";
const MAIN: &str = "millrace.plant-berlin.redeliveries";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_redelivered_too_often_is_dead_lettered_and_an_old_queue_still_works() {
    let vhost = TestVhost::create("worker-redeliveries").await;
    let ch = confirm_channel(&vhost).await;

    // The main queue as an earlier release declared it: no x-delivery-limit, at-most-once
    // dead-lettering. RabbitMQ refuses to redeclare it with the guard, so the worker must
    // declare it as it is.
    let mut old_args = FieldTable::default();
    for (k, v) in [
        ("x-queue-type", "quorum"),
        ("x-dead-letter-exchange", MAIN),
        ("x-dead-letter-routing-key", "dlq"),
    ] {
        old_args.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
    }
    ch.queue_declare(
        MAIN.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        old_args,
    )
    .await
    .expect("the old-style main queue");

    let dest = destination(|_| 200).await;
    let worker = start_worker(&vhost, config("plant-berlin", FLOW, &dest.base)).await;
    let canonical = sink_queue(&ch, "canonical").await;
    worker.shutdown().await;

    // A message that "crashes" a consumer: given back to the queue ten times.
    publish(
        &ch,
        "production.completed.berlin",
        &event("crashy", "berlin", 1.0),
        event_properties("crashy"),
    )
    .await;
    let nacker = vhost.connection().create_channel().await.unwrap();
    let mut consumer = nacker
        .basic_consume(
            MAIN.into(),
            "crash-simulator".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    for _ in 0..10 {
        let d = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("the message comes back")
            .unwrap()
            .unwrap();
        d.acker
            .nack(BasicNackOptions {
                requeue: true,
                multiple: false,
            })
            .await
            .unwrap();
    }
    nacker.close(200, "done".into()).await.unwrap();

    let worker = start_worker(&vhost, config("plant-berlin", FLOW, &dest.base)).await;
    publish(
        &ch,
        "production.completed.berlin",
        &event("fine", "lyon", 2.0),
        event_properties("fine"),
    )
    .await;

    let delivered = collect(
        &ch,
        &canonical,
        1,
        Duration::from_secs(30),
        Duration::from_secs(1),
    )
    .await;
    assert_eq!(
        message_ids(&delivered),
        ["fine"],
        "only the good event is delivered"
    );
    let dead = the_dead_letter(&ch, MAIN, "delivery_limit_exceeded", "--max-redeliveries").await;
    assert_eq!(
        dead.header("x-delivery-count"),
        None,
        "the count stays with the queue that counted"
    );
    worker.shutdown().await;
}
