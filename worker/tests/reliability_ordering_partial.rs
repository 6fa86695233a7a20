//! Ordering under partial failures: an ordered flow (`ordering.key` over 4 partitions) keeps each
//! key in order when part of the way fails, at both of its destinations: a route that fails for a
//! while, a message requeued after one of its routes was delivered, and splits that some
//! partitions refuse.
//!
//! Each test publishes 500 events over 10 orders (the ordering key), each with its sequence
//! number within the order, in a shuffled but fixed order. The flow has two routes that take
//! every event: `canonical` (AMQP, to a sink queue) and `erp` (HTTP, to a test destination that
//! answers 503 to the requests a test chooses). Each test checks that every order arrives at each
//! destination as 0, 1, ..., 49, that nothing is dead-lettered, and that the fault it injects
//! really happened (so a test cannot pass without exercising its path).
//!
//! Why they fail when ordering breaks:
//! - A partition consumer takes one message at a time and retries a failing route in place,
//!   holding its partition. Were the failing HTTP route parked in a retry tier instead, the
//!   partition would ack the event and run the next event of the same order at once, and the
//!   parked one would come back at least 500 ms later (the shortest tier): the destination would
//!   see event n+1 accepted before event n. The partition tests also check the *attempts*: once
//!   an order's event n+1 was requested, its event n is never requested again, which is what "in
//!   place" means, whether or not a late retry would have been accepted. (Run unordered with
//!   prefetch 1, so that the same refusals are parked in tiers, the first test reports every
//!   order out of order at `erp`.)
//! - A message whose route could not be settled is requeued. With prefetch 1 nothing behind it in
//!   its partition has been delivered yet, so it comes back first; a consumer that took more, or
//!   that acked and republished the message instead, would let the events behind it overtake it.
//!   The requeued message runs only the routes it has not delivered yet, so the AMQP sink gets
//!   every message id once.
//! - The splitter acks a source message only once its partition copy is confirmed, lets no split
//!   of a key start while the previous one is unconfirmed, and sends a refused copy again in
//!   place, its key still held. A split that overtook a refused split of the same key would reach
//!   its partition, and the destinations, first.
//!
//! The worker delivers at least once (`docs/worker.md`). Only the splitter test lets an event
//! arrive twice, and then only right after itself: a partition copy confirmed but not yet acked
//! when a splitter's session ends is split again. The partition tests allow no duplicate at all, since
//! no worker restarts there.
//!
//! Two of the tests caught bugs, fixed since: a message requeued twice sent its delivered AMQP
//! route again, and a refused split let a later split of its key overtake an earlier one.
//!
//! Needs the local RabbitMQ (`make env-up`); fails when it is not up.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lapin::types::FieldTable;
use millrace_crds::common::Backoff;
use millrace_crds::flow::HttpMethod;
use millrace_crds::naming::FlowNames;
use millrace_crds::worker_config::{
    DestinationConfig, OrderingConfig, RetryConfig, RouteConfig, WorkerConfig,
};
use millrace_testkit::TestVhost;
use millrace_worker::RunningWorker;
use millrace_worker::metrics::Metrics;
use serde_json::{Value, json};
use support::*;

const NAMESPACE: &str = "ordering";
const ORDERS: usize = 10;
const PER_ORDER: u64 = 50;
const EVENTS: usize = ORDERS * PER_ORDER as usize;
const PARTITIONS: u32 = 4;
const SOURCE_KEY: &str = "production.completed.berlin";
const SINK_KEY: &str = "canonical";
/// Longest wait for every event to reach both destinations.
const COMPLETION: Duration = Duration::from_secs(45);

/// One published event.
#[derive(Clone, Debug)]
struct Event {
    /// `ce-id`, and so the `message_id` of its AMQP delivery (the flow has no idempotency key).
    id: String,
    /// The ordering key.
    order: String,
    /// Its place within the order.
    seq: u64,
}

impl Event {
    fn body(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "orderId": self.order,
            "seq": self.seq,
            "site": "berlin",
            "qty": 1,
        }))
        .expect("JSON serializes")
    }
}

/// 500 events over 10 orders, shuffled with a fixed seed. In a round robin an order's previous
/// event would always be the oldest unconfirmed split, and the cases where another order's
/// refused split comes first would never happen.
fn events() -> Vec<Event> {
    let mut orders: Vec<usize> = (0..ORDERS)
        .flat_map(|o| std::iter::repeat_n(o, PER_ORDER as usize))
        .collect();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..orders.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        orders.swap(i, (state % (i as u64 + 1)) as usize);
    }
    let mut next = [0u64; ORDERS];
    orders
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            let seq = next[o];
            next[o] += 1;
            Event {
                id: format!("evt-{i:03}"),
                order: format!("order-{o:02}"),
                seq,
            }
        })
        .collect()
}

async fn publish_all(vhost: &TestVhost, events: &[Event]) {
    let ch = confirm_channel(vhost).await;
    for e in events {
        publish(&ch, SOURCE_KEY, &e.body(), event_properties(&e.id)).await;
    }
    let _ = ch.close(200, "published".into()).await;
}

/// The support flow made ordered: key `.orderId` over 4 partitions, a transform that keeps the
/// sequence number, two routes that take every event, and no idempotency window, so that only
/// the worker's memory of delivered routes (not a dedupe window) keeps a route from running
/// twice.
fn ordered_config(flow: &str, http_base: &str, retry: RetryConfig) -> WorkerConfig {
    let mut config = config(NAMESPACE, flow, http_base);
    if let Some(erp) = config
        .connections
        .get_mut("erp")
        .and_then(|c| c.http.as_mut())
    {
        erp.rate_limit_per_second = None;
        erp.rate_limit_burst = None;
    }
    let f = &mut config.flows[0];
    if let Some(t) = f.transform.as_mut() {
        t.jq = Some("{order: .orderId, seq: .seq, plant: $plants[.site], qty: .qty}".into());
    }
    f.routes = vec![
        RouteConfig {
            name: "canonical".into(),
            when: None,
            connection: "bus".into(),
            destination: DestinationConfig::Amqp {
                exchange: SINK_EXCHANGE.into(),
                routing_key: SINK_KEY.into(),
            },
            retry: retry.clone(),
        },
        RouteConfig {
            name: "erp".into(),
            when: None,
            connection: "erp".into(),
            destination: DestinationConfig::Http {
                method: HttpMethod::Post,
                path: "/orders/{order}/confirmations".into(),
            },
            retry,
        },
    ];
    f.delivery.idempotency = None;
    f.delivery.ordering = Some(OrderingConfig {
        key: ".orderId".into(),
        partitions: PARTITIONS,
    });
    config
}

fn retry(max_attempts: u32, initial_delay_ms: u64, max_delay_ms: u64) -> RetryConfig {
    RetryConfig {
        max_attempts,
        backoff: Backoff::Exponential,
        initial_delay_ms,
        max_delay_ms,
    }
}

fn flow_label(flow: &str) -> String {
    format!("{NAMESPACE}/{flow}")
}

/// Starts a worker without waiting for readiness: a splitter that fails on its first messages
/// is ready only for moments, which a readiness poll may never see.
async fn start_worker_now(vhost: &TestVhost, config: WorkerConfig) -> RunningWorker {
    millrace_worker::start(config, test_options(vhost))
        .await
        .expect("worker starts")
}

/// Which requests the HTTP destination refuses with 503 (a transient failure).
#[derive(Default)]
struct Refusals {
    /// How many requests of each of these events, by (order, seq), to refuse.
    first: HashMap<(String, u64), u32>,
    /// Once this many requests were accepted, refuse every request for this long.
    outage: Option<(usize, Duration)>,
}

impl Refusals {
    fn into_answer(self) -> impl Fn(&str, &[u8]) -> u16 + Send + Sync + 'static {
        struct State {
            plan: Refusals,
            requests: HashMap<(String, u64), u32>,
            accepted: usize,
            outage_until: Option<Instant>,
        }
        let state = Mutex::new(State {
            plan: self,
            requests: HashMap::new(),
            accepted: 0,
            outage_until: None,
        });
        move |_path, body| {
            let mut s = state.lock().expect("refusal state");
            let Some(event) = order_and_seq(body) else {
                return 400;
            };
            let n = s.requests.entry(event.clone()).or_default();
            *n += 1;
            let nth = *n;
            let in_outage = s.outage_until.is_some_and(|until| Instant::now() < until);
            if in_outage || s.plan.first.get(&event).is_some_and(|&k| nth <= k) {
                return 503;
            }
            s.accepted += 1;
            if let Some((after, length)) = s.plan.outage
                && s.accepted == after
            {
                s.outage_until = Some(Instant::now() + length);
            }
            200
        }
    }
}

fn order_and_seq(body: &[u8]) -> Option<(String, u64)> {
    let v: Value = serde_json::from_slice(body).ok()?;
    Some((
        v.get("order")?.as_str()?.to_string(),
        v.get("seq")?.as_u64()?,
    ))
}

/// One arrival of an event at a destination.
#[derive(Clone, Debug)]
struct Arrival {
    seq: u64,
    /// `ce-id` of an HTTP request, `message_id` of an AMQP delivery.
    id: String,
}

/// Arrivals per order, in arrival order.
type PerOrder = BTreeMap<String, Vec<Arrival>>;

/// What the destinations and the dead-letter queue got.
struct Outcome {
    /// Every HTTP request, accepted or refused.
    http_attempts: PerOrder,
    /// The accepted HTTP requests.
    http_accepted: PerOrder,
    http_refused: usize,
    /// Deliveries to the AMQP sink.
    amqp: PerOrder,
    /// Messages in the dead-letter queue.
    dead_lettered: Option<u32>,
    /// Every event reached both destinations within [`COMPLETION`].
    complete: bool,
    took: Duration,
}

/// Waits until the HTTP destination accepted every event, then takes what the AMQP sink got.
async fn observe(
    vhost: &TestVhost,
    sink: &str,
    dest: &Destination,
    names: &FlowNames,
    since: Instant,
) -> Outcome {
    let http_done = wait_until(COMPLETION, || distinct_ids(&http_seen(dest).1) >= EVENTS).await;
    let ch = vhost
        .connection()
        .create_channel()
        .await
        .expect("a channel to collect on");
    let received = collect(
        &ch,
        sink,
        EVENTS,
        COMPLETION.saturating_sub(since.elapsed()),
        Duration::from_millis(700),
    )
    .await;
    let took = since.elapsed();
    let mut amqp = PerOrder::new();
    for r in &received {
        let id = r
            .properties
            .message_id()
            .as_ref()
            .map_or_else(|| "<no message_id>".to_string(), |m| m.to_string());
        let (order, seq) = order_and_seq(&r.body).unwrap_or_else(|| ("<no order>".into(), 0));
        amqp.entry(order).or_default().push(Arrival { seq, id });
    }
    let (http_attempts, http_accepted, http_refused) = http_seen(dest);
    Outcome {
        complete: http_done && distinct_ids(&amqp) >= EVENTS,
        http_attempts,
        http_accepted,
        http_refused,
        amqp,
        dead_lettered: queue_depth(vhost, &names.dead_letter_queue()).await,
        took,
    }
}

/// Every request, the accepted ones, and how many were refused.
fn http_seen(dest: &Destination) -> (PerOrder, PerOrder, usize) {
    let mut attempts = PerOrder::new();
    let mut accepted = PerOrder::new();
    let mut refused = 0;
    for r in dest.recorded() {
        let Some((order, seq)) = order_and_seq(&r.body) else {
            continue;
        };
        let id = r
            .headers
            .get("ce-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("<no ce-id>")
            .to_string();
        let arrival = Arrival { seq, id };
        attempts
            .entry(order.clone())
            .or_default()
            .push(arrival.clone());
        if r.status == 200 {
            accepted.entry(order).or_default().push(arrival);
        } else {
            refused += 1;
        }
    }
    (attempts, accepted, refused)
}

fn distinct_ids(per_order: &PerOrder) -> usize {
    let mut ids: Vec<&str> = per_order
        .values()
        .flatten()
        .map(|a| a.id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

impl Outcome {
    /// The checks every test makes: complete, each order in order at both destinations, nothing
    /// dead-lettered.
    fn violations(&self) -> Vec<String> {
        let mut failures = Vec::new();
        if !self.complete {
            failures.push(format!(
                "not every event reached both destinations within {COMPLETION:?}"
            ));
        }
        failures.extend(order_violations("erp (HTTP)", &self.http_accepted));
        failures.extend(order_violations("canonical (AMQP)", &self.amqp));
        if self.dead_lettered != Some(0) {
            failures.push(format!(
                "the dead-letter queue holds {:?} messages",
                self.dead_lettered
            ));
        }
        failures
    }

    /// Events a destination got more than once, as `id ×n`.
    fn duplicates(&self) -> (Vec<String>, Vec<String>) {
        (duplicates(&self.http_accepted), duplicates(&self.amqp))
    }

    fn summary(&self) -> String {
        let count = |p: &PerOrder| p.values().map(Vec::len).sum::<usize>();
        let (http_twice, amqp_twice) = self.duplicates();
        format!(
            "after {:?}: HTTP {} requests ({} accepted, {} refused; accepted twice: {http_twice:?}); AMQP {} deliveries of {} message ids (delivered twice: {amqp_twice:?}); dead-letter queue {:?}",
            self.took,
            count(&self.http_attempts),
            count(&self.http_accepted),
            self.http_refused,
            count(&self.amqp),
            distinct_ids(&self.amqp),
            self.dead_lettered,
        )
    }
}

/// Where an order departs from 0, 1, ..., 49: an arrival that skips ahead or goes back. An
/// arrival that repeats the one just before it is a duplicate, not a break in order;
/// [`duplicates`] counts those.
fn order_violations(destination: &str, per_order: &PerOrder) -> Vec<String> {
    let mut failures = Vec::new();
    if per_order.len() != ORDERS {
        failures.push(format!(
            "{destination}: {} orders arrived, expected {ORDERS}",
            per_order.len()
        ));
    }
    for (order, arrivals) in per_order {
        let mut next = 0u64;
        for (position, a) in arrivals.iter().enumerate() {
            if a.seq == next {
                next += 1;
            } else if !(next > 0 && a.seq == next - 1) {
                failures.push(format!(
                    "{destination}: {order} arrival {position} is seq {} ({}), expected seq {next}; around it: {}",
                    a.seq,
                    a.id,
                    around(arrivals, position)
                ));
                break;
            }
        }
        if next != PER_ORDER {
            failures.push(format!(
                "{destination}: {order} reached seq {next} of {PER_ORDER} in order"
            ));
        }
    }
    failures
}

/// Where an order's requests go back to an earlier event. Retried in place, event n is requested
/// again only before event n+1 is first requested.
fn attempt_violations(attempts: &PerOrder) -> Vec<String> {
    let mut failures = Vec::new();
    for (order, arrivals) in attempts {
        if let Some(i) = arrivals.windows(2).position(|w| w[1].seq < w[0].seq) {
            failures.push(format!(
                "erp (HTTP): {order} requested seq {} after seq {}: a retry came back after a later event; around it: {}",
                arrivals[i + 1].seq,
                arrivals[i].seq,
                around(arrivals, i + 1)
            ));
        }
    }
    failures
}

fn duplicates(per_order: &PerOrder) -> Vec<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for a in per_order.values().flatten() {
        *counts.entry(&a.id).or_default() += 1;
    }
    counts
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, n)| format!("{id} ×{n}"))
        .collect()
}

/// The arrivals around `position`, as `seq (id)`.
fn around(arrivals: &[Arrival], position: usize) -> String {
    arrivals[position.saturating_sub(4)..(position + 4).min(arrivals.len())]
        .iter()
        .map(|a| format!("{} ({})", a.seq, a.id))
        .collect::<Vec<_>>()
        .join(", ")
}

fn worker_counts(worker: &RunningWorker, flow: &str) -> String {
    let label = flow_label(flow);
    let m = &worker.metrics;
    let per_flow = Metrics::flow(&label);
    let retried = |route: &str| {
        m.events_retried
            .get_or_create(&Metrics::route(&label, route))
            .get()
    };
    format!(
        "worker: received {}, retried canonical {} / erp {}, settle retries {}, requeued {}, consumer session failures {}",
        m.events_received.get_or_create(&per_flow).get(),
        retried("canonical"),
        retried("erp"),
        m.settle_retries.get_or_create(&per_flow).get(),
        m.events_requeued.get_or_create(&per_flow).get(),
        m.broker_connection_failures.get_or_create(&per_flow).get(),
    )
}

/// Polls `done` every 50 ms until it holds or `timeout` passes; returns whether it held.
async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done()
}

fn assert_no_failures(failures: &[String], outcome: &Outcome, counts: &str) {
    let summary = format!("{}\n{counts}", outcome.summary());
    eprintln!("{summary}");
    assert!(
        failures.is_empty(),
        "{}\n{summary}",
        failures[..failures.len().min(20)].join("\n")
    );
}

/// Neither destination may get an event twice where no worker restarts: a route that failed
/// is retried alone, and a requeued message runs only its routes not yet delivered.
fn no_duplicates(outcome: &Outcome, failures: &mut Vec<String>) {
    let (http_twice, amqp_twice) = outcome.duplicates();
    if !http_twice.is_empty() {
        failures.push(format!("erp (HTTP) accepted events twice: {http_twice:?}"));
    }
    if !amqp_twice.is_empty() {
        failures.push(format!(
            "canonical (AMQP) was delivered again while erp was retried: {amqp_twice:?}"
        ));
    }
}

/// The HTTP route fails for chosen events and during an outage, always within its retry budget:
/// every failure is retried in place, nothing is requeued, and the AMQP route runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_route_failing_for_a_while_is_retried_in_place_and_each_order_stays_in_order() {
    let flow = "in-place";
    let vhost = TestVhost::create("ordering-in-place").await;
    let ch = confirm_channel(&vhost).await;
    let sink = sink_queue(&ch, SINK_KEY).await;
    let events = events();
    // Two orders' events whose seq ends in 4 are refused three times each, and once 150
    // requests were accepted the destination refuses everything for a second (an outage). Ten
    // attempts, 50 ms doubling to 400 ms apart, outlast both.
    let refusals = Refusals {
        first: events
            .iter()
            .filter(|e| (e.order == "order-02" || e.order == "order-07") && e.seq % 10 == 4)
            .map(|e| ((e.order.clone(), e.seq), 3))
            .collect(),
        outage: Some((150, Duration::from_secs(1))),
    };
    let planned = refusals.first.len() * 3;
    let dest = destination_per_request(refusals.into_answer()).await;
    let worker = start_worker(&vhost, ordered_config(flow, &dest.base, retry(10, 50, 400))).await;
    let names = FlowNames::new(NAMESPACE, flow);

    let started = Instant::now();
    publish_all(&vhost, &events).await;
    let outcome = observe(&vhost, &sink, &dest, &names, started).await;

    let mut failures = outcome.violations();
    failures.extend(attempt_violations(&outcome.http_attempts));
    no_duplicates(&outcome, &mut failures);
    // The outage refuses at least one request per partition on top of the planned ones.
    if outcome.http_refused <= planned {
        failures.push(format!(
            "the destination refused {} requests, expected more than the {planned} planned: the outage never happened",
            outcome.http_refused
        ));
    }
    let requeued = worker
        .metrics
        .events_requeued
        .get_or_create(&Metrics::flow(&flow_label(flow)))
        .get();
    if requeued != 0 {
        failures.push(format!(
            "{requeued} messages were requeued: a retry in place holds its message"
        ));
    }
    let counts = worker_counts(&worker, flow);
    worker.shutdown().await;
    assert_no_failures(&failures, &outcome, &counts);
}

/// A requeue scenario: the dead-letter queue is unbound from the flow's exchange, so an HTTP
/// delivery that exhausts its two attempts cannot be dead-lettered (the broker returns the
/// dead-letter). The worker tries again to settle it, five rounds 0.2 s doubling to 1.6 s apart,
/// then requeues the message, whose AMQP route was delivered in the first round. Each round
/// makes two requests, so an event refused 10 times is requeued once and accepted on its next
/// delivery, and one refused 20 times is requeued twice.
async fn requeue_scenario(flow: &str, refused: &[(&str, u64, u32)]) {
    let vhost = TestVhost::create(&format!("ordering-{flow}")).await;
    let ch = confirm_channel(&vhost).await;
    let sink = sink_queue(&ch, SINK_KEY).await;
    let events = events();
    let refusals = Refusals {
        first: refused
            .iter()
            .map(|&(order, seq, n)| ((order.to_string(), seq), n))
            .collect(),
        outage: None,
    };
    let dest = destination_per_request(refusals.into_answer()).await;
    let worker = start_worker(&vhost, ordered_config(flow, &dest.base, retry(2, 50, 50))).await;
    let names = FlowNames::new(NAMESPACE, flow);
    ch.queue_unbind(
        names.dead_letter_queue().as_str().into(),
        names.exchange().as_str().into(),
        millrace_topology::ROUTING_KEY_DEAD_LETTER.into(),
        FieldTable::default(),
    )
    .await
    .expect("unbinding the dead-letter queue");

    let started = Instant::now();
    publish_all(&vhost, &events).await;
    let outcome = observe(&vhost, &sink, &dest, &names, started).await;

    let mut failures = outcome.violations();
    failures.extend(attempt_violations(&outcome.http_attempts));
    // A message requeued twice must still remember the routes its first run delivered: were
    // they forgotten when read, the third delivery would send the AMQP route again.
    no_duplicates(&outcome, &mut failures);
    let planned: u64 = refused.iter().map(|&(_, _, n)| u64::from(n / 10)).sum();
    let requeued = worker
        .metrics
        .events_requeued
        .get_or_create(&Metrics::flow(&flow_label(flow)))
        .get();
    if requeued < planned {
        failures.push(format!(
            "{requeued} messages were requeued, expected {planned}: the requeue path was not taken"
        ));
    }
    let counts = worker_counts(&worker, flow);
    worker.shutdown().await;
    assert_no_failures(&failures, &outcome, &counts);
}

/// Two events, of two orders, are each requeued once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_requeued_message_comes_back_first_and_runs_only_its_undelivered_route() {
    requeue_scenario(
        "requeued-once",
        &[("order-03", 10, 10), ("order-06", 30, 10)],
    )
    .await;
}

/// One event is requeued twice before its HTTP route is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_requeued_twice_still_never_resends_its_delivered_route() {
    requeue_scenario("requeued-twice", &[("order-05", 20, 20)]).await;
}

/// Sets (`Some`) or deletes (`None`) a policy on the vhost through the management API.
async fn policy(vhost: &TestVhost, name: &str, definition: Option<Value>) {
    let (user, password) = vhost.credentials();
    let url = format!(
        "{}/api/policies/{}/{name}",
        vhost.management_url(),
        vhost.name()
    );
    let client = reqwest::Client::new();
    let request = match definition {
        Some(body) => client.put(&url).json(&body),
        None => client.delete(&url),
    };
    let response = request
        .basic_auth(user, Some(password))
        .send()
        .await
        .unwrap_or_else(|e| panic!("policy {name}: {e}"));
    let status = response.status();
    assert!(
        status.is_success(),
        "policy {name}: the management API answered {status}: {}",
        response.text().await.unwrap_or_default()
    );
}

/// Waits until the management API shows `queue` under `policy`.
async fn wait_for_policy(vhost: &TestVhost, queue: &str, policy: &str) {
    let (user, password) = vhost.credentials();
    let url = format!(
        "{}/api/queues/{}/{queue}",
        vhost.management_url(),
        vhost.name()
    );
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let applied = match client
            .get(&url)
            .basic_auth(user, Some(password))
            .send()
            .await
        {
            Ok(r) => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|q| q.get("policy").and_then(Value::as_str).map(str::to_string)),
            Err(_) => None,
        };
        if applied.as_deref() == Some(policy) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "queue {queue} has policy {applied:?}, expected {policy:?} within 15s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two of the four partition queues refuse publishes (a `max-length: 0` policy; they overflow
/// with reject-publish) until the splitter has had copies refused twice, then take them again. Splits to the
/// other two partitions go through meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn splits_refused_by_some_partitions_are_sent_again_without_overtaking() {
    let flow = "split-refusals";
    let vhost = TestVhost::create("ordering-split-refusals").await;
    let ch = confirm_channel(&vhost).await;
    let sink = sink_queue(&ch, SINK_KEY).await;
    let dest = destination_per_request(|_, _| 200).await;
    let config = ordered_config(flow, &dest.base, retry(10, 50, 400));
    let names = FlowNames::new(NAMESPACE, flow);
    millrace_broker::declare(&ch, &millrace_topology::plan(&config.flows[0]))
        .await
        .expect("declaring the flow's topology");
    // Partitions 0 and 1 refuse publishes (full, with reject-publish overflow), so the
    // broker nacks most splits of their orders while partitions 2 and 3 take theirs.
    const REFUSING: &str = "refuse-splits";
    policy(
        &vhost,
        REFUSING,
        Some(json!({
            "pattern": format!("^{}\\.p[01]$", names.base.replace('.', "\\.")),
            "definition": {"max-length": 0},
            "apply-to": "queues",
            "priority": 1,
        })),
    )
    .await;
    for p in [0, 1] {
        wait_for_policy(&vhost, &names.partition_queue(p), REFUSING).await;
    }
    // Queued before the worker runs, the events reach the splitter as one burst, so that many
    // splits of several orders are unconfirmed when a refusal comes in.
    let events = events();
    publish_all(&vhost, &events).await;

    let started = Instant::now();
    let worker = start_worker_now(&vhost, config).await;
    let label = flow_label(flow);
    let splitter_failures = || {
        worker
            .metrics
            .settle_retries
            .get_or_create(&Metrics::flow(&label))
            .get()
    };
    let refused = wait_until(Duration::from_secs(20), || splitter_failures() >= 2).await;
    let delivered_while_refusing = queue_depth(&vhost, &sink).await.unwrap_or(0);
    policy(&vhost, REFUSING, None).await;
    let outcome = observe(&vhost, &sink, &dest, &names, started).await;

    // A refused copy must keep its key held until it is confirmed. Were it requeued while later
    // messages of its key were already delivered to the splitter (or were they nacked before
    // it), one of them would be split first and overtake it.
    let mut failures = outcome.violations();
    if !refused {
        failures.push(format!(
            "the splitter had {} copies refused in 20s, expected at least 2: the partitions never refused a split",
            splitter_failures()
        ));
    }
    if delivered_while_refusing == 0 {
        failures.push(
            "nothing was delivered while partitions 0 and 1 refused: the refusal was not partial"
                .into(),
        );
    }
    let counts = format!(
        "{}; {delivered_while_refusing} events delivered while partitions 0 and 1 refused",
        worker_counts(&worker, flow)
    );
    worker.shutdown().await;
    assert_no_failures(&failures, &outcome, &counts);
}
