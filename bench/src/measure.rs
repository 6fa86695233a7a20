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

/// How fast a backlog went through, and what it cost the consumer.
#[derive(Clone, Copy, Debug)]
pub struct DrainRate {
    /// Messages per second that reached every output.
    pub msgs_per_s: f64,
    /// Seconds between the first and the last message at the outputs.
    pub seconds: f64,
    /// User plus system CPU time of the consumer over the same span, per message, in µs.
    pub cpu_us_per_msg: f64,
}

/// Watches `outputs` until each holds `expected` messages, and measures the rate between the first
/// poll that saw output and the poll that saw the last message. The consumer's CPU time is sampled
/// at those same two polls, so start-up (connecting, compiling the flow) does not count. Fails when
/// `consumer` dies or when nothing moves for `stall`.
pub async fn drain(
    channel: &Channel,
    outputs: &[String],
    expected: u64,
    consumer: &mut MeasuredProcess,
    progress: &mut Progress,
    stall: Duration,
) -> Result<DrainRate> {
    let mut first: Option<(Instant, u64, f64)> = None;
    let mut last_change = (Instant::now(), 0u64);
    loop {
        consumer.ensure_running()?;
        let mut done = u64::MAX;
        for queue in outputs {
            done = done.min(u64::from(queue_depth(channel, queue).await?.messages));
        }
        let now = Instant::now();
        if done > 0 && first.is_none() {
            first = Some((now, done, consumer.cpu_seconds()?));
        }
        if done >= expected {
            let cpu = consumer.cpu_seconds()?;
            let (t0, n0, cpu0) = first.unwrap_or((now, done, cpu));
            let seconds = now.duration_since(t0).as_secs_f64();
            if seconds <= 0.0 || done <= n0 {
                bail!(
                    "the backlog of {expected} drained before it could be timed; raise --messages"
                );
            }
            let messages = (done - n0) as f64;
            return Ok(DrainRate {
                msgs_per_s: messages / seconds,
                seconds,
                cpu_us_per_msg: (cpu - cpu0) * 1e6 / messages,
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

/// Publish confirms the paced publisher may wait for at once; a broker that confirms slower than
/// the offered rate fills it, which holds the publisher back and shows as a missed rate.
const PACED_CONFIRM_WINDOW: usize = 2_000;
/// How often the queue depths are sampled during a paced run.
const DEPTH_SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// The achieved publish rate must be within this fraction of the offered one.
pub const RATE_TOLERANCE: f64 = 0.03;
/// A queue whose ready count grows faster than this fraction of the offered rate is backing up.
pub const BACKLOG_GROWTH_TOLERANCE: f64 = 0.02;

/// End-to-end latency of a paced run, in milliseconds, and whether the run was below saturation.
#[derive(Clone, Debug)]
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
    /// Offered publish rate, msg/s.
    pub offered_per_s: f64,
    /// Confirmed publish rate, msg/s.
    pub achieved_per_s: f64,
    /// Growth of the input queue's ready count after the warm-up (least squares), msg/s.
    pub input_growth_per_s: f64,
    /// Largest ready count of the input queue after the warm-up.
    pub input_max_depth: u32,
    /// Why the percentiles measure a queue rather than the path (`None`: they are valid).
    pub saturated: Option<String>,
    /// The sampled depths as CSV (seconds, then one column per queue), for a closer look.
    pub depths_csv: String,
}

impl Latency {
    /// The p99, unless the run was saturated.
    pub fn p99(&self) -> Option<f64> {
        self.saturated.is_none().then_some(self.p99_ms)
    }

    /// The p50, unless the run was saturated.
    pub fn p50(&self) -> Option<f64> {
        self.saturated.is_none().then_some(self.p50_ms)
    }
}

/// Where a paced run publishes and where it reads the results.
pub struct PacedRun<'a> {
    /// Exchange to publish to.
    pub exchange: &'a str,
    /// Routing key.
    pub routing_key: &'a str,
    /// Queue the consumer reads; its depth must stay flat.
    pub input_queue: &'a str,
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

/// The connections of a paced run: the publisher and the readers each have their own, and the
/// queue depths are sampled on a third.
pub struct PacedConnections<'a> {
    /// Carries only the paced publishes (confirm channel).
    pub publisher: &'a Connection,
    /// Carries the consumers of the outputs.
    pub reader: &'a Connection,
    /// Carries the passive declares that sample the depths.
    pub control: &'a Connection,
}

/// Publishes at a steady rate with confirms and measures publish → arrival at `timed_output`,
/// sampling the depth of the input and of the outputs meanwhile.
pub async fn paced_latency(
    connections: PacedConnections<'_>,
    run: PacedRun<'_>,
    consumer: &mut MeasuredProcess,
    progress: &mut Progress,
) -> Result<Latency> {
    let epoch = Instant::now();
    let total = (run.rate * run.duration.as_secs_f64()) as u64;
    let warm_up_us = run.warm_up.as_micros() as u64;
    let deadline = run.duration + Duration::from_secs(60);

    let timed = consume_no_ack(connections.reader, run.timed_output).await?;
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
        let mut stream = consume_no_ack(connections.reader, queue).await?;
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

    let mut sampled: Vec<String> = vec![run.input_queue.to_string(), run.timed_output.to_string()];
    sampled.extend(run.other_outputs.iter().cloned());
    let (stop_sampling, stopped) = tokio::sync::oneshot::channel::<()>();
    let sampler = tokio::spawn(sample_depths(
        connections.control.create_channel().await?,
        sampled.clone(),
        epoch,
        stopped,
    ));

    let channel = connections.publisher.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let (confirms_tx, mut confirms_rx) =
        tokio::sync::mpsc::channel::<PublisherConfirm>(PACED_CONFIRM_WINDOW);
    let exchange = run.exchange.to_string();
    let confirmer = tokio::spawn(async move {
        let mut span: Option<(Instant, Instant)> = None;
        let mut confirmed = 0u64;
        while let Some(confirm) = confirms_rx.recv().await {
            expect_ack(confirm.await?, &exchange)?;
            let now = Instant::now();
            span = Some((span.map_or(now, |(first, _)| first), now));
            confirmed += 1;
        }
        Ok::<_, anyhow::Error>((confirmed, span))
    });

    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0u64;
    while sent < total {
        ticker.tick().await;
        let due = ((epoch.elapsed().as_secs_f64() * run.rate) as u64).min(total);
        while sent < due {
            let sent_us = epoch.elapsed().as_micros() as u64;
            let confirm = channel
                .basic_publish(
                    run.exchange.into(),
                    run.routing_key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &event::body(sent, sent_us),
                    event::properties(sent),
                )
                .await?;
            confirms_tx
                .send(confirm)
                .await
                .context("the confirm reader stopped early")?;
            sent += 1;
        }
        progress.tick("published at a steady rate", sent, total);
        if sent.is_multiple_of(1024) {
            consumer.ensure_running()?;
        }
    }
    drop(confirms_tx);
    let (confirmed, span) = confirmer.await.context("confirm reader panicked")??;
    let _ = stop_sampling.send(());
    let depths = sampler.await.context("depth sampler panicked")??;
    let _ = channel.close(200, "paced run done".into()).await;

    let (received, mut latencies) = collector.await.context("latency collector panicked")??;
    for sink in sinks {
        sink.await.context("output drain panicked")?;
    }
    consumer.ensure_running()?;

    let achieved_per_s = match span {
        Some((first, last)) if confirmed > 1 && last > first => {
            (confirmed - 1) as f64 / last.duration_since(first).as_secs_f64()
        }
        _ => 0.0,
    };
    let after_warm_up: Vec<&DepthSample> = depths
        .iter()
        .filter(|d| d.at_s >= run.warm_up.as_secs_f64())
        .collect();
    let growth: Vec<f64> = (0..sampled.len())
        .map(|i| {
            let points: Vec<(f64, f64)> = after_warm_up
                .iter()
                .map(|d| (d.at_s, f64::from(d.depths[i])))
                .collect();
            slope(&points)
        })
        .collect();
    let input_max_depth = after_warm_up.iter().map(|d| d.depths[0]).max().unwrap_or(0);

    let mut reasons = Vec::new();
    if achieved_per_s < run.rate * (1.0 - RATE_TOLERANCE) {
        reasons.push(format!(
            "publishes confirmed at {achieved_per_s:.0} of {:.0} msg/s offered",
            run.rate
        ));
    }
    for (queue, g) in sampled.iter().zip(&growth) {
        if *g > run.rate * BACKLOG_GROWTH_TOLERANCE {
            reasons.push(format!("{queue} backed up by {g:.0} msg/s"));
        }
    }
    if received < total {
        reasons.push(format!(
            "only {received} of {total} messages reached {} within {}s",
            run.timed_output,
            deadline.as_secs()
        ));
    }
    if latencies.is_empty() {
        bail!(
            "no latency samples after the warm-up ({received} of {total} arrived); lengthen \
             --latency-seconds; last lines of the consumer's log:\n{}",
            consumer.log_tail(30)
        );
    }
    latencies.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(Latency {
        samples: latencies.len(),
        p50_ms: ms(percentile(&latencies, 0.50)),
        p99_ms: ms(percentile(&latencies, 0.99)),
        p999_ms: ms(percentile(&latencies, 0.999)),
        max_ms: ms(*latencies.last().unwrap_or(&0)),
        offered_per_s: run.rate,
        achieved_per_s,
        input_growth_per_s: growth[0],
        input_max_depth,
        saturated: (!reasons.is_empty()).then(|| reasons.join("; ")),
        depths_csv: depths_csv(&sampled, &depths),
    })
}

fn depths_csv(queues: &[String], depths: &[DepthSample]) -> String {
    let mut csv = format!("seconds,{}\n", queues.join(","));
    for d in depths {
        let row: Vec<String> = d.depths.iter().map(u32::to_string).collect();
        csv.push_str(&format!("{:.3},{}\n", d.at_s, row.join(",")));
    }
    csv
}

/// Ready counts of the sampled queues at one moment.
struct DepthSample {
    at_s: f64,
    depths: Vec<u32>,
}

/// Samples the ready count of `queues` until `stop` fires.
async fn sample_depths(
    channel: Channel,
    queues: Vec<String>,
    epoch: Instant,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Result<Vec<DepthSample>> {
    let mut samples = Vec::new();
    let mut every = tokio::time::interval(DEPTH_SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = every.tick() => {
                let at_s = epoch.elapsed().as_secs_f64();
                let mut depths = Vec::with_capacity(queues.len());
                for queue in &queues {
                    depths.push(queue_depth(&channel, queue).await?.messages);
                }
                samples.push(DepthSample { at_s, depths });
            }
        }
    }
    let _ = channel.close(200, "sampled".into()).await;
    Ok(samples)
}

/// Least-squares slope of `points` (y per unit of x); 0 with fewer than two distinct x.
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if sxx == 0.0 {
        return 0.0;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    sxy / sxx
}

/// Median of `values` (the mean of the middle two for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
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
    use super::{median, percentile, slope};

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn slope_tells_a_growing_queue_from_a_flat_one() {
        let growing: Vec<(f64, f64)> = (0..50).map(|i| (i as f64 * 0.2, i as f64 * 20.0)).collect();
        assert!((slope(&growing) - 100.0).abs() < 1e-9);
        let flat: Vec<(f64, f64)> = (0..50)
            .map(|i| (i as f64 * 0.2, if i % 2 == 0 { 0.0 } else { 150.0 }))
            .collect();
        assert!(slope(&flat).abs() < 5.0);
        assert_eq!(slope(&[(1.0, 5.0)]), 0.0);
    }

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
