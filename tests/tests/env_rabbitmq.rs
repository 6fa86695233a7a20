//! The local RabbitMQ carries persistent messages through a quorum queue and through a stream, the two
//! durable queue types Millrace builds on.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use millrace_testkit::TestVhost;

const PERSISTENT: u8 = 2;

fn arguments(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in pairs {
        table.insert((*key).into(), value.clone());
    }
    table
}

/// Declares a durable queue of `queue_type`, then checks through the management API that RabbitMQ
/// made it that type (an unknown argument would have been refused, but be explicit).
async fn declare(vhost: &TestVhost, channel: &Channel, name: &str, queue_type: &str) {
    channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments(&[("x-queue-type", AMQPValue::LongString(queue_type.into()))]),
        )
        .await
        .unwrap_or_else(|e| panic!("declare {queue_type} queue {name}: {e}"));
    let (user, password) = vhost.credentials();
    let info: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/api/queues/{}/{name}",
            vhost.management_url(),
            vhost.name()
        ))
        .basic_auth(user, Some(password))
        .send()
        .await
        .expect("ask the management API for the queue")
        .json()
        .await
        .expect("queue info as JSON");
    assert_eq!(info["type"], queue_type, "queue info: {info}");
    assert_eq!(info["durable"], true, "queue info: {info}");
}

/// Publishes one persistent message to the default exchange and waits for the broker's confirm.
async fn publish_confirmed(channel: &Channel, queue: &str, body: &[u8]) {
    let confirmation = channel
        .basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(PERSISTENT),
        )
        .await
        .expect("publish")
        .await
        .expect("publisher confirm");
    assert!(
        confirmation.is_ack(),
        "broker did not ack the publish to {queue}: {confirmation:?}"
    );
}

/// Consumes the next delivery from `queue`, checks it is the persistent `body`, and acks it.
async fn consume_one(channel: &Channel, queue: &str, arguments: FieldTable, body: &[u8]) {
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "env-test".into(),
            BasicConsumeOptions::default(),
            arguments,
        )
        .await
        .unwrap_or_else(|e| panic!("consume from {queue}: {e}"));
    let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .unwrap_or_else(|_| panic!("no delivery from {queue} within 10s"))
        .unwrap_or_else(|| panic!("consumer on {queue} ended"))
        .unwrap_or_else(|e| panic!("delivery from {queue}: {e}"));
    assert_eq!(delivery.data, body, "payload from {queue}");
    assert_eq!(
        *delivery.properties.delivery_mode(),
        Some(PERSISTENT),
        "delivery mode from {queue}"
    );
    delivery.ack(BasicAckOptions::default()).await.expect("ack");
}

#[tokio::test]
async fn persistent_message_goes_through_a_quorum_queue() {
    let vhost = TestVhost::create("env-quorum").await;
    let channel = vhost
        .connection()
        .create_channel()
        .await
        .expect("open a channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    declare(&vhost, &channel, "orders.quorum", "quorum").await;

    publish_confirmed(&channel, "orders.quorum", br#"{"order":1}"#).await;
    consume_one(
        &channel,
        "orders.quorum",
        FieldTable::default(),
        br#"{"order":1}"#,
    )
    .await;
}

#[tokio::test]
async fn persistent_message_goes_through_a_stream() {
    let vhost = TestVhost::create("env-stream").await;
    let channel = vhost
        .connection()
        .create_channel()
        .await
        .expect("open a channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirm mode");
    declare(&vhost, &channel, "orders.stream", "stream").await;

    publish_confirmed(&channel, "orders.stream", br#"{"order":2}"#).await;
    // AMQP 0-9-1 consumers of a stream must set a prefetch and say where in the stream to start.
    channel
        .basic_qos(10, BasicQosOptions::default())
        .await
        .expect("prefetch");
    let from_first = arguments(&[("x-stream-offset", AMQPValue::LongString("first".into()))]);
    consume_one(&channel, "orders.stream", from_first, br#"{"order":2}"#).await;
}
