//! The two measurements: throughput (pre-load a backlog, then time how fast a consumer drains it into
//! both destinations) and latency (publish at a steady rate, read the publish time back at the
//! destination).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, Connection, PublisherConfirm};

use crate::broker::queue_depth;
use crate::event;
use crate::process::MeasuredProcess;
use crate::progress::Progress;

/// Publish confirms outstanding at once while pre-loading.
const PRELOAD_WINDOW: usize = 2_000;

/// Publishes `count` events to `exchange`, each confirmed by the broker.
pub async fn preload(
    connection: &Connection,
    exchange: &str,
    routing_key: &str,
    count: u64,
    progress: &mut Progress,
) -> Result<()> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut pending: VecDeque<PublisherConfirm> = VecDeque::with_capacity(PRELOAD_WINDOW);
    for seq in 0..count {
        let confirm = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &event::body(seq, 0),
                event::properties(seq),
            )
            .await?;
        pending.push_back(confirm);
        if pending.len() >= PRELOAD_WINDOW
            && let Some(oldest) = pending.pop_front()
        {
            expect_ack(oldest.await?, exchange)?;
        }
        progress.tick("pre-loading", seq + 1, count);
    }
    for confirm in pending {
        expect_ack(confirm.await?, exchange)?;
    }
    let _ = channel.close(200, "pre-loaded".into()).await;
    Ok(())
}

fn expect_ack(confirmation: Confirmation, exchange: &str) -> Result<()> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        other => bail!("pre-load publish to {exchange:?} was not confirmed: {other:?}"),
    }
}

/// How fast a backlog went through.
#[derive(Clone, Copy, Debug)]
pub struct DrainRate {
    /// Messages per second that reached every output.
    pub msgs_per_s: f64,
    /// Seconds between the first and the last message at the outputs.
    pub seconds: f64,
}

/// Watches `outputs` until each holds `expected` messages, and measures the rate between the first
/// poll that saw output and the poll that saw the last message. Fails when `consumer` dies or when
/// nothing moves for `stall`.
pub async fn drain(
    channel: &Channel,
    outputs: &[String],
    expected: u64,
    consumer: &mut MeasuredProcess,
    progress: &mut Progress,
    stall: Duration,
) -> Result<DrainRate> {
    let mut first: Option<(Instant, u64)> = None;
    let mut last_change = (Instant::now(), 0u64);
    loop {
        consumer.ensure_running()?;
        let mut done = u64::MAX;
        for queue in outputs {
            done = done.min(u64::from(queue_depth(channel, queue).await?.messages));
        }
        let now = Instant::now();
        if done > 0 && first.is_none() {
            first = Some((now, done));
        }
        if done >= expected {
            let (t0, n0) = first.unwrap_or((now, done));
            let seconds = now.duration_since(t0).as_secs_f64();
            if seconds <= 0.0 || done <= n0 {
                bail!(
                    "the backlog of {expected} drained before it could be timed; raise --messages"
                );
            }
            return Ok(DrainRate {
                msgs_per_s: (done - n0) as f64 / seconds,
                seconds,
            });
        }
        if done != last_change.1 {
            last_change = (now, done);
        } else if now.duration_since(last_change.0) > stall {
            bail!(
                "no progress for {}s: the outputs {outputs:?} hold {done} of {expected} messages; \
                 last lines of the consumer's log:\n{}",
                stall.as_secs(),
                consumer.log_tail(30)
            );
        }
        progress.tick("delivered to both outputs", done, expected);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// End-to-end latency percentiles, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    /// Samples kept (after the warm-up).
    pub samples: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// Where a paced run publishes and where it reads the results.
pub struct PacedRun<'a> {
    /// Exchange to publish to (`""` for the default exchange).
    pub exchange: &'a str,
    /// Routing key.
    pub routing_key: &'a str,
    /// Output whose messages are timed.
    pub timed_output: &'a str,
    /// Other outputs, drained so that they do not grow.
    pub other_outputs: &'a [String],
    /// Messages per second.
    pub rate: f64,
    /// How long to publish.
    pub duration: Duration,
    /// Samples published in this first part are left out.
    pub warm_up: Duration,
}

/// Publishes at a steady rate and measures publish → arrival at `timed_output`.
pub async fn paced_latency(
    connection: &Connection,
    run: PacedRun<'_>,
    consumer: &mut MeasuredProcess,
    progress: &mut Progress,
) -> Result<Latency> {
    let epoch = Instant::now();
    let total = (run.rate * run.duration.as_secs_f64()) as u64;
    let warm_up_us = run.warm_up.as_micros() as u64;
    let deadline = run.duration + Duration::from_secs(60);

    let timed = consume_no_ack(connection, run.timed_output).await?;
    let collector = tokio::spawn(async move {
        let mut timed = timed;
        let mut latencies_us = Vec::with_capacity(total as usize);
        let mut received = 0u64;
        while received < total {
            match tokio::time::timeout_at((epoch + deadline).into(), timed.next()).await {
                Ok(Some(Ok(delivery))) => {
                    received += 1;
                    let now_us = epoch.elapsed().as_micros() as u64;
                    if let Some(sent) = event::sent_us(&delivery.data)
                        && sent >= warm_up_us
                    {
                        latencies_us.push(now_us.saturating_sub(sent));
                    }
                }
                Ok(Some(Err(e))) => return Err(anyhow::Error::from(e)),
                Ok(None) | Err(_) => break,
            }
        }
        Ok::<_, anyhow::Error>((received, latencies_us))
    });
    let mut sinks = Vec::new();
    for queue in run.other_outputs {
        let mut stream = consume_no_ack(connection, queue).await?;
        sinks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while n < total {
                match tokio::time::timeout_at((epoch + deadline).into(), stream.next()).await {
                    Ok(Some(Ok(_))) => n += 1,
                    _ => break,
                }
            }
            n
        }));
    }

    let channel = connection.create_channel().await?;
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0u64;
    while sent < total {
        ticker.tick().await;
        let due = ((epoch.elapsed().as_secs_f64() * run.rate) as u64).min(total);
        while sent < due {
            let sent_us = epoch.elapsed().as_micros() as u64;
            channel
                .basic_publish(
                    run.exchange.into(),
                    run.routing_key.into(),
                    BasicPublishOptions::default(),
                    &event::body(sent, sent_us),
                    event::properties(sent),
                )
                .await?;
            sent += 1;
        }
        progress.tick("published at a steady rate", sent, total);
        if sent.is_multiple_of(1024) {
            consumer.ensure_running()?;
        }
    }

    let (received, mut latencies) = collector.await.context("latency collector panicked")??;
    for sink in sinks {
        sink.await.context("output drain panicked")?;
    }
    consumer.ensure_running()?;
    if received < total {
        bail!(
            "only {received} of {total} messages reached {} within {}s; last lines of the consumer's log:\n{}",
            run.timed_output,
            deadline.as_secs(),
            consumer.log_tail(30)
        );
    }
    if latencies.is_empty() {
        bail!("no latency samples after the warm-up; lengthen --latency-seconds");
    }
    latencies.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(Latency {
        samples: latencies.len(),
        p50_ms: ms(percentile(&latencies, 0.50)),
        p99_ms: ms(percentile(&latencies, 0.99)),
        p999_ms: ms(percentile(&latencies, 0.999)),
        max_ms: ms(*latencies.last().unwrap_or(&0)),
    })
}

async fn consume_no_ack(connection: &Connection, queue: &str) -> Result<lapin::Consumer> {
    let channel = connection.create_channel().await?;
    channel
        .basic_consume(
            queue.into(),
            format!("bench-latency-{queue}").into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("consuming {queue}"))
}

/// The nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 0.50), 50);
        assert_eq!(percentile(&samples, 0.99), 99);
        assert_eq!(percentile(&samples, 1.0), 100);
        assert_eq!(percentile(&[7], 0.99), 7);
        assert_eq!(percentile(&[], 0.99), 0);
    }
}
