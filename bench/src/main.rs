//! `millrace-bench`: the worker's full pipeline against a bare lapin relay, side by side in one run
//! on the same RabbitMQ. See docs/benchmarks.md for the method and the latest figures.
//!
//! The last line it prints has the form
//! `bench: baseline_msgs_per_s=N pipeline_msgs_per_s=N ratio=R p99_added_ms=X worker_rss_mib=Y`.

mod broker;
mod event;
mod measure;
mod pipeline;
mod process;
mod progress;
mod relay;
mod side;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use lapin::Connection;

use broker::{BenchVhost, BrokerAddress};
use measure::{DrainRate, Latency, PacedConnections, PacedRun, median};
use process::MeasuredProcess;
use progress::Progress;
use side::Side;

/// Benchmarks the Millrace worker against a bare lapin relay on the local RabbitMQ.
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Internal>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand, Debug)]
enum Internal {
    /// The baseline relay (started by the bench itself as a child process).
    Relay(relay::RelaySpec),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// AMQP host:port of the broker.
    #[arg(long, default_value = "127.0.0.1:5672")]
    amqp: String,
    /// Base URL of the RabbitMQ management API.
    #[arg(long, default_value = "http://127.0.0.1:15672")]
    management_url: String,
    /// Broker user (AMQP and management API).
    #[arg(long, default_value = "guest")]
    user: String,
    /// Broker password.
    #[arg(long, default_value = "guest")]
    password: String,
    /// Events in each throughput backlog.
    #[arg(long, env = "BENCH_MESSAGES", default_value_t = 40_000)]
    messages: u64,
    /// Throughput rounds (baseline then pipeline each round); the median of each side counts.
    #[arg(long, env = "BENCH_ROUNDS", default_value_t = 3)]
    rounds: usize,
    /// Seconds of steady-rate publishing for each latency run.
    #[arg(long, env = "BENCH_LATENCY_SECONDS", default_value_t = 15)]
    latency_seconds: u64,
    /// Offered rate of the latency runs, as a fraction of the baseline's median drain rate.
    #[arg(long, env = "BENCH_LATENCY_LOAD", default_value_t = 0.3)]
    latency_load: f64,
    /// Extra environment of the worker process, `KEY=VALUE` (space-separated in the variable),
    /// e.g. `MALLOC_ARENA_MAX=2 TOKIO_WORKER_THREADS=1`.
    #[arg(long = "worker-env", env = "BENCH_WORKER_ENV", value_delimiter = ' ')]
    worker_env: Vec<String>,
    /// Prefetch of both the relay and the worker.
    #[arg(long, default_value_t = 200)]
    prefetch: u16,
    /// The worker binary (default: `millrace-worker` next to this binary).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// Measure only the baseline (when no worker binary exists yet).
    #[arg(long)]
    baseline_only: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Some(Internal::Relay(spec)) => runtime.block_on(relay::run(spec)),
        None => runtime.block_on(bench(cli.run)),
    }
}

/// What one side measured over the whole run.
#[derive(Clone, Debug, Default)]
struct SideFigures {
    rounds: Vec<DrainRate>,
    peak_rss_kib: u64,
    idle_rss_kib: u64,
    latency: Option<Latency>,
}

impl SideFigures {
    fn median_msgs_per_s(&self) -> f64 {
        median(&self.rounds.iter().map(|r| r.msgs_per_s).collect::<Vec<_>>())
    }

    fn median_cpu_us(&self) -> f64 {
        median(
            &self
                .rounds
                .iter()
                .map(|r| r.cpu_us_per_msg)
                .collect::<Vec<_>>(),
        )
    }

    fn rounds_text(&self) -> String {
        self.rounds
            .iter()
            .map(|r| format!("{:.0}", r.msgs_per_s))
            .collect::<Vec<_>>()
            .join(" / ")
    }

    fn cpu_rounds_text(&self) -> String {
        self.rounds
            .iter()
            .map(|r| format!("{:.1}", r.cpu_us_per_msg))
            .collect::<Vec<_>>()
            .join(" / ")
    }
}

struct Bench {
    args: RunArgs,
    vhost: BenchVhost,
    connection: Connection,
    channel: lapin::Channel,
    work_dir: PathBuf,
    worker_bin: Option<PathBuf>,
    worker_env: Vec<(String, String)>,
    progress: Progress,
    starts: usize,
}

async fn bench(args: RunArgs) -> Result<()> {
    let worker_bin = if args.baseline_only {
        None
    } else {
        Some(find_worker(args.worker_bin.as_deref())?)
    };
    let worker_env = parse_env(&args.worker_env)?;
    if !(args.latency_load > 0.0 && args.latency_load <= 1.0) {
        bail!(
            "--latency-load (BENCH_LATENCY_LOAD) is {}; give a fraction of the baseline rate in (0, 1]",
            args.latency_load
        );
    }
    let rounds = args.rounds.max(1);
    let sides = if worker_bin.is_some() { 2 } else { 1 };
    let mut progress = Progress::new(1 + rounds * sides + sides + 1);
    progress.step("creating a vhost and the benchmark topology");
    let address = BrokerAddress {
        amqp: args.amqp.clone(),
        management: args.management_url.trim_end_matches('/').to_string(),
        user: args.user.clone(),
        password: args.password.clone(),
    };
    let vhost = BenchVhost::create(address, format!("millrace-bench-{}", std::process::id()))
        .await
        .context("creating the bench vhost")?;
    progress.note(&format!("vhost {}", vhost.name()));
    let work_dir = std::env::temp_dir().join(vhost.name());
    std::fs::create_dir_all(&work_dir)?;
    let connection = vhost.connect("control").await?;
    let channel = connection.create_channel().await?;
    let mut bench = Bench {
        args,
        vhost,
        connection,
        channel,
        work_dir,
        worker_bin,
        worker_env,
        progress,
        starts: 0,
    };
    let outcome = bench.run(rounds).await;
    let _ = bench.connection.close(200, "bench done".into()).await;
    if let Err(e) = bench.vhost.delete().await {
        eprintln!("could not delete vhost {}: {e:#}", bench.vhost.name());
    }
    let line = outcome?;
    println!("{line}");
    Ok(())
}

/// `KEY=VALUE` pairs; empty items (from a blank variable) are skipped.
fn parse_env(items: &[String]) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .filter(|item| !item.is_empty())
        .map(|item| match item.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
            _ => bail!(
                "--worker-env (BENCH_WORKER_ENV): {item:?} is not KEY=VALUE; write e.g. MALLOC_ARENA_MAX=2"
            ),
        })
        .collect()
}

impl Bench {
    fn sides(&self) -> Vec<Side> {
        if self.worker_bin.is_some() {
            Side::BOTH.to_vec()
        } else {
            vec![Side::Baseline]
        }
    }

    async fn run(&mut self, rounds: usize) -> Result<String> {
        for side in self.sides() {
            side.declare(&self.channel, self.args.prefetch).await?;
        }
        self.progress.note(&format!(
            "both sides: topic exchange -> quorum main queue (+ idle retry tiers and DLQ, no \
             archive) -> consumer -> 2 direct exchanges -> 2 quorum queues; {} B events, prefetch {}",
            event::EVENT_BYTES,
            self.args.prefetch
        ));
        let mut figures = [SideFigures::default(), SideFigures::default()];
        for round in 1..=rounds {
            for side in self.sides() {
                self.progress.step(&format!(
                    "round {round}/{rounds}: {} ({}) throughput, {} events",
                    side.label(),
                    side.description(),
                    self.args.messages
                ));
                let (rate, rss) = self.throughput(side).await?;
                self.progress.note(&format!(
                    "round {round}/{rounds} {}: {:.0} msg/s, {:.1} µs CPU/msg (drain {:.1}s, peak RSS {:.1} MiB)",
                    side.label(),
                    rate.msgs_per_s,
                    rate.cpu_us_per_msg,
                    rate.seconds,
                    mib(rss)
                ));
                let f = &mut figures[side as usize];
                f.rounds.push(rate);
                f.peak_rss_kib = f.peak_rss_kib.max(rss);
            }
        }

        let rate = (figures[0].median_msgs_per_s() * self.args.latency_load).max(1.0);
        for side in self.sides() {
            self.progress.step(&format!(
                "{} latency at {rate:.0} msg/s offered ({:.0}% of the baseline median), {}s",
                side.label(),
                self.args.latency_load * 100.0,
                self.args.latency_seconds
            ));
            let (latency, peak, idle) = self.latency(side, rate).await?;
            self.progress.note(&describe_latency(&latency));
            let csv = self
                .work_dir
                .join(format!("latency-{}-depths.csv", side.label()));
            std::fs::write(&csv, &latency.depths_csv)
                .with_context(|| format!("writing {}", csv.display()))?;
            self.progress.note(&format!(
                "peak RSS {:.1} MiB (idle {:.1} MiB); queue depths in {}",
                mib(peak),
                mib(idle),
                csv.display()
            ));
            let f = &mut figures[side as usize];
            f.peak_rss_kib = f.peak_rss_kib.max(peak);
            f.idle_rss_kib = idle;
            f.latency = Some(latency);
        }

        self.progress.step("summary");
        Ok(summary(
            &figures,
            rounds,
            rate,
            self.args.latency_load,
            self.worker_bin.is_some(),
        ))
    }

    fn start_consumer(&mut self, side: Side) -> Result<MeasuredProcess> {
        self.starts += 1;
        let log = self
            .work_dir
            .join(format!("{}-{}.log", side.label(), self.starts));
        match side {
            Side::Baseline => {
                let mut command = Command::new(std::env::current_exe()?);
                command
                    .arg("relay")
                    .args(["--uri", &self.vhost.uri()])
                    .args(["--queue", &side.input_queue()])
                    .args(["--routing-key", pipeline::OUTPUT_ROUTING_KEY])
                    .args(["--prefetch", &self.args.prefetch.to_string()]);
                for exchange in &side.outputs().exchanges {
                    command.args(["--exchange", exchange]);
                }
                MeasuredProcess::spawn("baseline relay", command, &log)
            }
            Side::Pipeline => {
                let bin = self
                    .worker_bin
                    .as_ref()
                    .context("no worker binary for this run")?;
                let config =
                    pipeline::worker_config(side.label(), &side.outputs(), self.args.prefetch);
                let path = self.work_dir.join("worker-config.json");
                std::fs::write(&path, serde_json::to_vec_pretty(&config)?)
                    .with_context(|| format!("writing {}", path.display()))?;
                let mut command = Command::new(bin);
                command
                    .arg("--config")
                    .arg(&path)
                    .args(["--listen", &format!("127.0.0.1:{}", free_port()?)])
                    .env(pipeline::BROKER_URI_ENV, self.vhost.uri())
                    .envs(self.worker_env.iter().map(|(k, v)| (k, v)));
                MeasuredProcess::spawn("worker", command, &log)
            }
        }
    }

    /// Waits until `queue` exists and has a consumer.
    async fn wait_for_consumer(&self, queue: &str, process: &mut MeasuredProcess) -> Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            process.ensure_running()?;
            // A passive declare of a missing queue closes its channel, so each try gets its own.
            let channel = self.connection.create_channel().await?;
            if let Ok(depth) = broker::queue_depth(&channel, queue).await {
                let _ = channel.close(200, "probed".into()).await;
                if depth.consumers > 0 {
                    return Ok(());
                }
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "no consumer on {queue} after 60s; last lines of the log:\n{}",
                    process.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Empties the side's input, outputs and dead-letter queue.
    async fn purge(&self, side: Side) -> Result<()> {
        let mut queues = side.outputs().queues();
        queues.push(side.input_queue());
        queues.push(side.dead_letter_queue());
        for queue in &queues {
            broker::purge(&self.channel, queue).await?;
        }
        Ok(())
    }

    /// Fails when the side dead-lettered anything: every bench event must be delivered.
    async fn ensure_nothing_dead_lettered(&self, side: Side) -> Result<()> {
        let dead = broker::queue_depth(&self.channel, &side.dead_letter_queue())
            .await?
            .messages;
        if dead > 0 {
            bail!(
                "{dead} bench events were dead-lettered by the {}; the bench flow must deliver \
                 every event (see its log in {})",
                side.label(),
                self.work_dir.display()
            );
        }
        Ok(())
    }

    /// Pre-loads the side's source exchange, starts its consumer, and times the drain. Returns the
    /// rate and the consumer's peak RSS.
    async fn throughput(&mut self, side: Side) -> Result<(DrainRate, u64)> {
        self.purge(side).await?;
        measure::preload(
            &self.connection,
            &side.source_exchange(),
            event::ROUTING_KEY,
            self.args.messages,
            &mut self.progress,
        )
        .await?;
        let mut consumer = self.start_consumer(side)?;
        let rate = measure::drain(
            &self.channel,
            &side.outputs().queues(),
            self.args.messages,
            &mut consumer,
            &mut self.progress,
            Duration::from_secs(30),
        )
        .await?;
        let rss = consumer.peak_rss_kib()?;
        consumer.kill();
        self.ensure_nothing_dead_lettered(side).await?;
        Ok((rate, rss))
    }

    /// A paced run through the side. Returns the latency, the consumer's peak RSS and its RSS once
    /// it consumes, before any load.
    async fn latency(&mut self, side: Side, rate: f64) -> Result<(Latency, u64, u64)> {
        self.purge(side).await?;
        let mut consumer = self.start_consumer(side)?;
        self.wait_for_consumer(&side.input_queue(), &mut consumer)
            .await?;
        let idle_rss = consumer.rss_kib()?;
        let publisher = self.vhost.connect("latency publisher").await?;
        let reader = self.vhost.connect("latency reader").await?;
        let outputs = side.outputs().queues();
        let source = side.source_exchange();
        let input = side.input_queue();
        let run = PacedRun {
            exchange: &source,
            routing_key: event::ROUTING_KEY,
            input_queue: &input,
            timed_output: &outputs[0],
            other_outputs: &outputs[1..],
            rate,
            duration: Duration::from_secs(self.args.latency_seconds),
            warm_up: Duration::from_secs(2),
        };
        let connections = PacedConnections {
            publisher: &publisher,
            reader: &reader,
            control: &self.connection,
        };
        let latency =
            measure::paced_latency(connections, run, &mut consumer, &mut self.progress).await;
        let _ = publisher.close(200, "paced run done".into()).await;
        let _ = reader.close(200, "paced run done".into()).await;
        let latency = latency?;
        let peak = consumer.peak_rss_kib()?;
        consumer.kill();
        self.ensure_nothing_dead_lettered(side).await?;
        Ok((latency, peak, idle_rss))
    }
}

/// A number, or `saturated`.
fn figure(value: Option<f64>) -> String {
    value.map_or_else(|| "saturated".to_string(), |v| format!("{v:.2}"))
}

/// The summary table, the goals of issue 17, and the last line that tools read.
fn summary(
    figures: &[SideFigures; 2],
    rounds: usize,
    rate: f64,
    load: f64,
    with_pipeline: bool,
) -> String {
    let [baseline, pipeline] = figures;
    let mut lines = vec![
        format!(
            "summary (median of {rounds} rounds; latency at {rate:.0} msg/s offered, {:.0}% of the baseline median):",
            load * 100.0
        ),
        format!(
            "  {:<9} {:>10} {:>10} {:>8} {:>10} {:>10} {:>9} {:>9}   rounds msg/s | CPU µs/msg",
            "side", "msg/s", "CPU µs/msg", "p50 ms", "p99 ms", "achieved/s", "RSS MiB", "idle MiB"
        ),
    ];
    let sides: &[(Side, &SideFigures)] = if with_pipeline {
        &[(Side::Baseline, baseline), (Side::Pipeline, pipeline)]
    } else {
        &[(Side::Baseline, baseline)]
    };
    for (side, f) in sides {
        let latency = f.latency.as_ref();
        lines.push(format!(
            "  {:<9} {:>10.0} {:>10.1} {:>8} {:>10} {:>10.0} {:>9.1} {:>9.1}   {} | {}",
            side.label(),
            f.median_msgs_per_s(),
            f.median_cpu_us(),
            figure(latency.and_then(Latency::p50)),
            figure(latency.and_then(Latency::p99)),
            latency.map_or(0.0, |l| l.achieved_per_s),
            mib(f.peak_rss_kib),
            mib(f.idle_rss_kib),
            f.rounds_text(),
            f.cpu_rounds_text()
        ));
        if let Some(reason) = latency.and_then(|l| l.saturated.as_deref()) {
            lines.push(format!("  {:<9} latency saturated: {reason}", side.label()));
        }
    }
    if !with_pipeline {
        lines.push(format!(
            "bench: baseline_msgs_per_s={:.0}",
            baseline.median_msgs_per_s()
        ));
        return lines.join("\n");
    }

    let ratio = pipeline.median_msgs_per_s() / baseline.median_msgs_per_s();
    let cpu_ratio = pipeline.median_cpu_us() / baseline.median_cpu_us();
    let baseline_p99 = baseline.latency.as_ref().and_then(Latency::p99);
    let pipeline_p99 = pipeline.latency.as_ref().and_then(Latency::p99);
    let added = baseline_p99.zip(pipeline_p99).map(|(b, p)| p - b);
    let rss = mib(pipeline.peak_rss_kib);
    lines.extend([
        "  goal (issue 17)                         value        target      verdict".to_string(),
        format!(
            "  throughput ratio, medians               {ratio:<12.2} >= 0.95      {}",
            verdict(ratio >= 0.95)
        ),
        format!(
            "  client CPU per message ratio, medians   {cpu_ratio:<12.2} <= 1.25      {}",
            verdict(cpu_ratio <= 1.25)
        ),
        format!(
            "  p99 added at {:>3.0}% load, ms             {:<12} < 5         {}",
            load * 100.0,
            figure(added),
            verdict(added.is_some_and(|a| a < 5.0))
        ),
        format!(
            "  worker peak RSS, MiB                    {rss:<12.1} < 32        {}",
            verdict(rss < 32.0)
        ),
        format!(
            "bench: baseline_msgs_per_s={:.0} pipeline_msgs_per_s={:.0} ratio={ratio:.2} p99_added_ms={} worker_rss_mib={rss:.1} baseline_cpu_us={:.1} pipeline_cpu_us={:.1} cpu_ratio={cpu_ratio:.2} baseline_p99_ms={} pipeline_p99_ms={} latency_rate={rate:.0}",
            baseline.median_msgs_per_s(),
            pipeline.median_msgs_per_s(),
            figure(added),
            baseline.median_cpu_us(),
            pipeline.median_cpu_us(),
            figure(baseline_p99),
            figure(pipeline_p99),
        ),
    ]);
    lines.join("\n")
}

/// The worker binary: the given path, else `millrace-worker` next to this binary.
fn find_worker(given: Option<&Path>) -> Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no parent directory")?
            .join("millrace-worker"),
    };
    if !path.is_file() {
        bail!(
            "no worker binary at {}; build it with `cargo build --release -p millrace-worker`, \
             pass --worker-bin, or measure only the baseline with --baseline-only",
            path.display()
        );
    }
    Ok(path)
}

/// A loopback port that is free now (the worker binds it right after).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn describe_latency(l: &Latency) -> String {
    let path = format!(
        "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} samples); publishes confirmed \
         at {:.0} of {:.0} msg/s; input queue grew {:.1} msg/s, at most {} ready",
        l.p50_ms,
        l.p99_ms,
        l.p999_ms,
        l.max_ms,
        l.samples,
        l.achieved_per_s,
        l.offered_per_s,
        l.input_growth_per_s,
        l.input_max_depth
    );
    match &l.saturated {
        None => path,
        Some(reason) => format!("saturated ({reason}); the figures measure a queue: {path}"),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}
