//! What happens to one received message: the pipeline, delivery to each selected route, and
//! the settlement of every failure (retry tier, in-place retry or dead-letter) before the ack.
//!
//! A message is acknowledged only once every route has a durable outcome: delivered, parked in
//! a retry tier, or dead-lettered. When even that is impossible (the broker is gone), the
//! message is requeued and comes back later.

use std::time::{Duration, Instant};

use chrono::Utc;
use lapin::BasicProperties;
use lapin::types::FieldTable;
use millrace_topology::{ROUTING_KEY_DEAD_LETTER, retry_routing_key};
use tokio_util::sync::CancellationToken;

use crate::amqp;
use crate::budget::Unfinished;
use crate::dedupe::Claim;
use crate::flow::{FlowRuntime, RouteSink};
use crate::headers;
use crate::metrics::{Metrics, Outcome, ReasonLabels};
use crate::pipeline::envelope::Envelope;
use crate::pipeline::reason::loggable;
use crate::pipeline::{DeadLetterReason, Message, Processed, Rejection};
use crate::retry::{
    Arrival, AttemptFailure, Parking, RetryPlace, RetryState, Settlement, failure_headers,
    settle_failure,
};
use crate::sink::DeliveryError;

/// How transient failures are retried.
#[derive(Clone)]
pub enum RetryMode {
    /// Park the message in a delay tier and acknowledge it (unordered flows).
    Tiers,
    /// Wait and retry in place, holding the queue (ordered partitions). Cancelling the token
    /// abandons the wait and requeues the message.
    InPlace(CancellationToken),
}

/// What to do with the received message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Every route has a durable outcome.
    Ack,
    /// Some outcome could not be made durable; the broker should deliver it again.
    Requeue,
}

/// Runs the pipeline on one message: inline when its programs finish in time bounded by the
/// event, otherwise on a thread of its own within the flow's time budget.
async fn run_pipeline(
    rt: &FlowRuntime,
    body: &[u8],
    properties: &BasicProperties,
) -> Result<Processed, Rejection> {
    if !rt.flow.may_loop() {
        return rt.flow.process(amqp::message(body, properties));
    }
    let flow = rt.flow.clone();
    let owned = body.to_vec();
    let content_type = properties.content_type().as_ref().map(|c| c.to_string());
    let envelope = amqp::envelope_of(properties);
    let run = rt
        .budget
        .run(move || {
            flow.process(Message {
                body: &owned,
                content_type: content_type.as_deref(),
                envelope,
            })
        })
        .await;
    match run {
        Ok(result) => result,
        Err(Unfinished::OverBudget) => {
            let limit = rt.budget.limit().as_millis();
            tracing::warn!(flow = %rt.label, budget_ms = limit, "a jq program ran past its budget; dead-lettering the message");
            if rt.budget.exhausted() {
                tracing::error!(flow = %rt.label, "too many jq programs run past their budget at once; /healthz now fails so that the worker is restarted");
            }
            Err(Rejection::new(
                DeadLetterReason::TransformBudgetExceeded,
                format!(
                    "the flow's jq programs ran longer than {limit} ms on this event (--transform-budget-ms); make the program loop less, or raise the budget"
                ),
            ))
        }
        Err(Unfinished::Panicked) => Err(Rejection::new(
            DeadLetterReason::JqError,
            "the pipeline panicked on this event",
        )),
        Err(Unfinished::NoThread(e)) => {
            tracing::warn!(flow = %rt.label, error = %e, "no thread for a budgeted pipeline run; running it inline");
            rt.flow.process(amqp::message(body, properties))
        }
    }
}

/// The settlement of one route could not be made durable.
struct NotSettled;

/// Runs one message through the flow. `arrival` is where the broker says the message came
/// from; only a message back from this flow's own retry tiers resumes its retry state.
pub async fn handle(
    rt: &FlowRuntime,
    body: &[u8],
    properties: &BasicProperties,
    arrival: Arrival<'_>,
    mode: &RetryMode,
) -> Disposition {
    let started = Instant::now();
    rt.series.received.inc();
    rt.series.inflight.inc();
    let (disposition, outcome) = handle_inner(rt, body, properties, arrival, mode).await;
    rt.series.inflight.dec();
    rt.series
        .processing(outcome)
        .observe(started.elapsed().as_secs_f64());
    disposition
}

async fn handle_inner(
    rt: &FlowRuntime,
    body: &[u8],
    properties: &BasicProperties,
    arrival: Arrival<'_>,
    mode: &RetryMode,
) -> (Disposition, Outcome) {
    let state = RetryState::of_arrival(
        properties.headers().as_ref(),
        &rt.label,
        &rt.flow.names.exchange(),
        arrival,
    );
    let redeliveries =
        headers::get_u32(properties.headers().as_ref(), headers::DELIVERY_COUNT).unwrap_or(0);
    let run = if redeliveries >= rt.max_redeliveries {
        tracing::warn!(flow = %rt.label, redeliveries, "redelivery limit reached; dead-lettering without running the pipeline");
        Err(Rejection::new(
            DeadLetterReason::DeliveryLimitExceeded,
            format!(
                "the broker delivered this message {} times and it was never settled; the limit is {} (--max-redeliveries): something about it crashes or stalls the worker",
                redeliveries + 1,
                rt.max_redeliveries
            ),
        ))
    } else {
        run_pipeline(rt, body, properties).await
    };
    let processed = match run {
        Ok(p) => p,
        Err(rejection) => {
            if matches!(
                rejection.reason,
                DeadLetterReason::ContractViolation | DeadLetterReason::OutputContractViolation
            ) {
                rt.metrics
                    .validation_failures
                    .get_or_create(&ReasonLabels {
                        flow: rt.label.clone(),
                        route: "none".into(),
                        reason: rejection.reason.as_str().into(),
                    })
                    .inc();
            }
            tracing::info!(flow = %rt.label, reason = %rejection.reason, error = %rejection.loggable(), "event rejected");
            return dead_letter_settled(
                rt,
                mode,
                body,
                properties,
                state.attempts.max(1),
                state.first_failure.as_deref(),
                rejection.reason,
                &rejection.detail,
            )
            .await;
        }
    };
    if processed.body.is_none() {
        return (Disposition::Ack, Outcome::Filtered);
    }
    // Routes delivered by earlier runs of a requeued message; they stay remembered should this
    // run be requeued too.
    let mut settled = Vec::new();
    let targets: Vec<usize> = match &state.route {
        Some(name) => match rt.flow.route_index(name) {
            Some(i) => vec![i],
            None => {
                tracing::warn!(flow = %rt.label, route = %name, "retry for a route that is no longer configured; dropping it");
                return (Disposition::Ack, Outcome::Filtered);
            }
        },
        None => {
            // A message requeued after some of its routes were delivered runs only the rest.
            settled = rt.partial.take(&processed.idempotency_key);
            processed
                .routes
                .iter()
                .copied()
                .filter(|i| !settled.contains(i))
                .collect()
        }
    };
    let prior = if state.route.is_some() {
        state.attempts
    } else {
        0
    };
    let mut pending = targets;
    let mut backoff = SETTLE_BACKOFF_FIRST;
    for round in 1.. {
        let results = futures::future::join_all(
            pending
                .iter()
                .map(|&i| deliver_route(rt, &processed, i, prior, &state, body, properties, mode)),
        )
        .await;
        let mut unsettled = Vec::new();
        for (&i, result) in pending.iter().zip(results) {
            match result {
                Ok(()) => settled.push(i),
                Err(NotSettled) => unsettled.push(i),
            }
        }
        if unsettled.is_empty() {
            return (Disposition::Ack, Outcome::Acked);
        }
        if round >= SETTLE_ROUNDS || !wait_to_settle(rt, mode, &mut backoff).await {
            break;
        }
        pending = unsettled;
    }
    // Requeued: the broker brings the message back, and only its unsettled routes run then.
    rt.partial.remember(&processed.idempotency_key, settled);
    rt.metrics
        .events_requeued
        .get_or_create(&Metrics::flow(&rt.label))
        .inc();
    (Disposition::Requeue, Outcome::Requeued)
}

/// Rounds of attempts to settle a message's routes before it is requeued.
const SETTLE_ROUNDS: u32 = 5;
/// The first wait between those rounds; each further wait doubles, up to
/// [`SETTLE_BACKOFF_MAX`].
const SETTLE_BACKOFF_FIRST: Duration = Duration::from_millis(200);
/// The longest wait between rounds.
const SETTLE_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Waits `backoff` (then doubles it) before another attempt to settle, counting the wait.
/// `false` when the consumer is stopping: the message is requeued at once.
async fn wait_to_settle(rt: &FlowRuntime, mode: &RetryMode, backoff: &mut Duration) -> bool {
    rt.metrics
        .settle_retries
        .get_or_create(&Metrics::flow(&rt.label))
        .inc();
    let wait = *backoff;
    *backoff = (*backoff * 2).min(SETTLE_BACKOFF_MAX);
    match mode {
        RetryMode::InPlace(cancel) => tokio::select! {
            _ = cancel.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        },
        RetryMode::Tiers => {
            tokio::time::sleep(wait).await;
            true
        }
    }
}

/// Dead-letters a message that no route was attempted for, trying again with a bounded
/// backoff when the dead-letter cannot be written; requeues it only when that never works.
#[allow(clippy::too_many_arguments)]
async fn dead_letter_settled(
    rt: &FlowRuntime,
    mode: &RetryMode,
    body: &[u8],
    properties: &BasicProperties,
    attempts: u32,
    first_failure: Option<&str>,
    reason: DeadLetterReason,
    detail: &str,
) -> (Disposition, Outcome) {
    let mut backoff = SETTLE_BACKOFF_FIRST;
    for round in 1.. {
        let written = dead_letter(
            rt,
            body,
            properties,
            None,
            attempts,
            first_failure,
            reason,
            detail,
        )
        .await;
        if written.is_ok() {
            return (Disposition::Ack, Outcome::DeadLettered);
        }
        if round >= SETTLE_ROUNDS || !wait_to_settle(rt, mode, &mut backoff).await {
            break;
        }
    }
    rt.metrics
        .events_requeued
        .get_or_create(&Metrics::flow(&rt.label))
        .inc();
    (Disposition::Requeue, Outcome::Requeued)
}

#[allow(clippy::too_many_arguments)]
async fn deliver_route(
    rt: &FlowRuntime,
    processed: &Processed,
    index: usize,
    prior_attempts: u32,
    state: &RetryState,
    body: &[u8],
    properties: &BasicProperties,
    mode: &RetryMode,
) -> Result<(), NotSettled> {
    let route = &rt.flow.routes[index].config;
    let series = &rt.route_series[index];
    let key = processed.idempotency_key.as_str();
    let dedupe = rt.dedupe.get(index).and_then(Option::as_ref);
    let mut attempt = prior_attempts + 1;
    let mut first_failure = state.first_failure.clone();
    loop {
        let mut claim = None;
        if let Some(d) = dedupe {
            loop {
                match d.claim(key) {
                    Claim::Delivered => {
                        series.deduplicated.inc();
                        return Ok(());
                    }
                    Claim::Busy => tokio::time::sleep(Duration::from_millis(20)).await,
                    Claim::Mine(guard) => {
                        claim = Some(guard);
                        break;
                    }
                }
            }
        }
        let result = send(rt, processed, index, &route.name).await;
        let error = match result {
            Ok(()) => {
                if let Some(guard) = claim {
                    guard.delivered();
                }
                series.delivered.inc();
                if let Some(time) = processed.envelope.time {
                    let lag = (Utc::now() - time).num_milliseconds().max(0) as u64;
                    series.latency.observe(lag as f64 / 1000.0);
                    if rt
                        .flow
                        .config
                        .sla_max_latency_ms
                        .is_some_and(|sla| lag > sla)
                    {
                        series.sla_breaches.inc();
                    }
                }
                return Ok(());
            }
            Err(e) => e,
        };
        drop(claim);
        let first = first_failure
            .get_or_insert_with(crate::retry::now_rfc3339)
            .clone();
        let (failure, detail) = match error {
            DeliveryError::Permanent { reason, detail } => {
                (AttemptFailure::Permanent(reason), detail)
            }
            DeliveryError::Transient {
                detail,
                retry_after,
            } => (
                AttemptFailure::Transient {
                    retry_after_ms: retry_after.map(|d| d.as_millis() as u64),
                },
                detail,
            ),
        };
        let place = match mode {
            RetryMode::Tiers => RetryPlace::Tiers(&rt.flow.config.delivery.retry_tiers_ms),
            RetryMode::InPlace(_) => RetryPlace::InPlace,
        };
        match settle_failure(failure, attempt, &route.retry, place) {
            Settlement::DeadLetter { reason, no_tier } => {
                let detail = if no_tier {
                    format!("{detail} (the flow has no retry tiers)")
                } else {
                    detail
                };
                if reason == DeadLetterReason::RetriesExhausted {
                    tracing::warn!(flow = %rt.label, route = %route.name, attempts = attempt, error = %loggable(None, &detail), "retries exhausted");
                } else {
                    tracing::info!(flow = %rt.label, route = %route.name, reason = %reason, error = %loggable(Some(reason), &detail), "delivery failed permanently");
                }
                return dead_letter(
                    rt,
                    body,
                    properties,
                    Some(&route.name),
                    attempt,
                    Some(&first),
                    reason,
                    &detail,
                )
                .await;
            }
            Settlement::Park { tier_ms } => {
                series.retried.inc();
                tracing::debug!(flow = %rt.label, route = %route.name, attempt, tier_ms, error = %detail, "parking for retry");
                let table = failure_headers(
                    properties.headers().as_ref(),
                    &rt.label,
                    Some(&route.name),
                    attempt,
                    Some(&first),
                    &detail,
                    Parking::RetryTier(tier_ms),
                );
                return rt
                    .publisher
                    .publish(
                        &rt.flow.names.exchange(),
                        &retry_routing_key(tier_ms),
                        body,
                        properties.clone().with_headers(table),
                    )
                    .await
                    .map_err(|e| {
                        tracing::warn!(flow = %rt.label, route = %route.name, error = %e, "could not park a retry; requeueing");
                        NotSettled
                    });
            }
            Settlement::RetryInPlace { delay_ms } => {
                series.retried.inc();
                tracing::debug!(flow = %rt.label, route = %route.name, attempt, delay_ms, error = %detail, "retrying in place");
                if let RetryMode::InPlace(cancel) = mode {
                    tokio::select! {
                        _ = cancel.cancelled() => return Err(NotSettled),
                        _ = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
                    }
                }
                attempt += 1;
            }
        }
    }
}

/// One delivery attempt on route `index`.
async fn send(
    rt: &FlowRuntime,
    processed: &Processed,
    index: usize,
    route_name: &str,
) -> Result<(), DeliveryError> {
    let Some(body) = processed.body.as_deref() else {
        return Ok(());
    };
    match &rt.sinks[index] {
        RouteSink::Amqp {
            publisher,
            exchange,
            routing_key,
        } => {
            let table = delivery_headers(
                &processed.envelope,
                &rt.label,
                route_name,
                &processed.idempotency_key,
            );
            let mut props = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_message_id(headers::short_string(&processed.idempotency_key))
                .with_timestamp(Utc::now().timestamp().max(0) as u64)
                .with_headers(table);
            if let Some(t) = &processed.envelope.event_type {
                props = props.with_type(headers::short_string(t));
            }
            publisher.publish(exchange, routing_key, body, props).await
        }
        RouteSink::Http { sink, method, path } => {
            sink.deliver(
                *method,
                path,
                &processed.output,
                body,
                &processed.envelope,
                &processed.idempotency_key,
            )
            .await
        }
    }
}

/// Headers of an AMQP delivery to a destination: the envelope (`ce-*`, trace context), the
/// idempotency key, and the delivering flow and route under names of their own. None of the
/// incoming message's headers, and none of the retry state of [`headers::RETRY_STATE`], is
/// passed on, so a flow that consumes these deliveries sees a fresh event.
fn delivery_headers(envelope: &Envelope, flow: &str, route: &str, key: &str) -> FieldTable {
    let mut table = FieldTable::default();
    amqp::write_envelope(envelope, &mut table);
    headers::set_str(&mut table, headers::FROM_FLOW, flow);
    headers::set_str(&mut table, headers::FROM_ROUTE, route);
    headers::set_str(&mut table, headers::IDEMPOTENCY_KEY, key);
    table
}

/// Writes the original message to the flow's DLQ with the failure headers.
#[allow(clippy::too_many_arguments)]
async fn dead_letter(
    rt: &FlowRuntime,
    body: &[u8],
    properties: &BasicProperties,
    route: Option<&str>,
    attempts: u32,
    first_failure: Option<&str>,
    reason: DeadLetterReason,
    detail: &str,
) -> Result<(), NotSettled> {
    let labels = ReasonLabels {
        flow: rt.label.clone(),
        route: route.unwrap_or("none").to_string(),
        reason: reason.as_str().to_string(),
    };
    if !rt.flow.config.delivery.dead_letter {
        tracing::warn!(flow = %rt.label, reason = %reason, error = %loggable(Some(reason), detail), "dead-lettering is disabled; dropping the event");
        rt.metrics.events_dead_lettered.get_or_create(&labels).inc();
        return Ok(());
    }
    let table = failure_headers(
        properties.headers().as_ref(),
        &rt.label,
        route,
        attempts,
        first_failure,
        detail,
        Parking::DeadLetter(reason.as_str()),
    );
    match rt
        .publisher
        .publish(
            &rt.flow.names.exchange(),
            ROUTING_KEY_DEAD_LETTER,
            body,
            properties.clone().with_headers(table),
        )
        .await
    {
        Ok(()) => {
            rt.metrics.events_dead_lettered.get_or_create(&labels).inc();
            Ok(())
        }
        Err(e) => {
            tracing::warn!(flow = %rt.label, error = %e, "could not dead-letter; requeueing");
            Err(NotSettled)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_carry_the_envelope_and_provenance_but_no_retry_state() {
        let envelope = Envelope {
            id: "evt-1".into(),
            event_type: Some("t".into()),
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
            ..Envelope::default()
        };
        let table = delivery_headers(&envelope, "ns/a", "canonical", "order-1");
        let get = |name| headers::get_str(Some(&table), name);
        assert_eq!(get(headers::CE_ID).as_deref(), Some("evt-1"));
        assert_eq!(get(headers::CE_TYPE).as_deref(), Some("t"));
        assert!(get(headers::TRACEPARENT).is_some());
        assert_eq!(get(headers::IDEMPOTENCY_KEY).as_deref(), Some("order-1"));
        assert_eq!(get(headers::FROM_FLOW).as_deref(), Some("ns/a"));
        assert_eq!(get(headers::FROM_ROUTE).as_deref(), Some("canonical"));
        for internal in headers::RETRY_STATE {
            assert_eq!(get(internal), None, "{internal} on a delivery");
        }
    }
}
