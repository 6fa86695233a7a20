//! Accounting: every event in the ledger must be either delivered to every route it was meant
//! for (as recorded by the partner simulators) or sitting in its flow's DLQ. The report waits
//! for retries to settle, then prints per-flow figures, the workers' own counters and latency,
//! and one line that says whether every injected event is accounted for.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::broker;
use crate::events;
use crate::ledger::{self, Entry};
use crate::partners::Snapshot;
use crate::prom;
use crate::scenario;

/// Settings of `millrace-simulator report`.
pub struct Settings {
    pub ledger: PathBuf,
    pub partners_url: String,
    pub amqp_uri: String,
    /// Namespace of the flows (DLQ names derive from it).
    pub namespace: String,
    /// Worker metrics endpoint per flow.
    pub metrics: Vec<(String, String)>,
    /// How long to wait for retries to settle before judging.
    pub wait: Duration,
    /// Where to write the verdict as JSON, for scripts and tests.
    pub json: Option<PathBuf>,
}

/// The verdict for one flow.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowVerdict {
    pub flow: String,
    pub injected: u64,
    /// Injected events deliberately broken.
    pub broken: u64,
    /// Events every intended route received.
    pub delivered: u64,
    /// Events found in the DLQ.
    pub dead_lettered: u64,
    /// Broken events found in the DLQ.
    pub broken_dead_lettered: u64,
    /// Neither delivered everywhere nor in the DLQ.
    pub missing: u64,
    /// Up to five missing event ids, with what was seen of them.
    pub missing_examples: Vec<String>,
    /// Events that reached a partner more than once (absorbed by the partner's idempotency).
    pub duplicates_at_partners: u64,
    /// For ordered flows: events that arrived before an earlier event of the same key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub out_of_order: Option<u64>,
    /// From the worker's /metrics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<WorkerFigures>,
}

/// What the flow's worker says about itself.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerFigures {
    /// Deliveries, summed over routes.
    pub delivered: f64,
    pub retried: f64,
    pub dead_lettered: f64,
    pub p50_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
}

/// The whole verdict.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub flows: Vec<FlowVerdict>,
    pub injected: u64,
    pub delivered: u64,
    pub dead_lettered: u64,
    pub missing: u64,
    pub all_accounted_for: bool,
    pub partners: serde_json::Value,
    pub settled_after_seconds: f64,
}

/// Keys each partner channel received, with their arrival order.
struct Received {
    by_channel: HashMap<(String, String), HashMap<String, (u64, u64)>>,
}

impl Received {
    fn from(snapshot: &Snapshot) -> Self {
        let mut by_channel: HashMap<(String, String), HashMap<String, (u64, u64)>> = HashMap::new();
        for r in &snapshot.receipts {
            by_channel
                .entry((r.system.clone(), r.channel.clone()))
                .or_default()
                .insert(r.key.clone(), (r.arrival, r.count));
        }
        Self { by_channel }
    }

    /// Arrival and copies of `key` on the destination of `flow`'s route `route`.
    fn get(&self, flow: &str, route: &str, key: &str) -> Option<(u64, u64)> {
        let spec = scenario::flow(flow)?;
        let dest = spec.routes.iter().find(|r| r.name == route)?.destination;
        self.by_channel
            .get(&(dest.system.name().to_string(), dest.channel.to_string()))?
            .get(key)
            .copied()
    }

    fn delivered_everywhere(&self, e: &Entry) -> bool {
        e.routes
            .iter()
            .all(|r| self.get(&e.flow, r, &e.key).is_some())
    }
}

async fn fetch_snapshot(http: &reqwest::Client, base: &str) -> anyhow::Result<Snapshot> {
    http.get(format!("{}/_sim/received", base.trim_end_matches('/')))
        .send()
        .await
        .with_context(|| format!("the partner simulators do not answer at {base}"))?
        .error_for_status()?
        .json()
        .await
        .context("reading the partners' receipts")
}

fn dlq_name(namespace: &str, flow: &str) -> String {
    format!("millrace.{namespace}.{flow}.dlq")
}

/// Ids and keys found in one flow's DLQ.
#[derive(Default)]
struct DeadLetters {
    ids: HashSet<String>,
    keys: HashSet<String>,
}

async fn read_dead_letters(
    connection: &lapin::Connection,
    namespace: &str,
    flow: &str,
) -> anyhow::Result<DeadLetters> {
    let queue = dlq_name(namespace, flow);
    let mut out = DeadLetters::default();
    if broker::queue_depth(connection, &queue).await?.is_none() {
        return Ok(out);
    }
    let contract = scenario::flow(flow).map(|f| f.contract).unwrap_or_default();
    for m in broker::peek(connection, &queue, 100_000).await? {
        if let Some(id) = m.headers.get("ce-id") {
            out.ids.insert(id.clone());
        }
        if let Some(id) = &m.message_id {
            out.ids.insert(id.clone());
            out.keys.insert(id.clone());
        }
        if let Ok(data) = serde_json::from_slice::<serde_json::Value>(&m.body)
            && let Some(key) = events::key_of(contract, &data)
        {
            out.keys.insert(key);
        }
    }
    Ok(out)
}

async fn scrape(http: &reqwest::Client, flow: &str, url: &str) -> anyhow::Result<WorkerFigures> {
    let text = http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let samples = prom::parse(&text);
    let buckets = prom::buckets_for_flow(&samples, "millrace_end_to_end_latency_seconds", flow);
    Ok(WorkerFigures {
        delivered: prom::sum_for_flow(&samples, "millrace_events_delivered_total", flow),
        retried: prom::sum_for_flow(&samples, "millrace_events_retried_total", flow),
        dead_lettered: prom::sum_for_flow(&samples, "millrace_events_dead_lettered_total", flow),
        p50_seconds: prom::quantile(0.5, &buckets),
        p99_seconds: prom::quantile(0.99, &buckets),
    })
}

/// Waits until every event is delivered or dead-lettered (or the wait runs out), prints the
/// report, and returns the verdict.
pub async fn run(settings: Settings) -> anyhow::Result<Verdict> {
    let entries = ledger::read(&settings.ledger)?;
    let mut by_flow: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    for e in entries {
        by_flow.entry(e.flow.clone()).or_default().push(e);
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let connection = broker::connect(&settings.amqp_uri).await?;

    let started = Instant::now();
    let mut last_line = Instant::now() - Duration::from_secs(60);
    let (snapshot, mut dead_letters) = loop {
        let snapshot = fetch_snapshot(&http, &settings.partners_url).await?;
        let received = Received::from(&snapshot);
        // Cheap check first: could the undelivered events all be in the DLQs?
        let mut plausible = true;
        let mut undelivered_total = 0;
        for (flow, entries) in &by_flow {
            let undelivered = entries
                .iter()
                .filter(|e| !received.delivered_everywhere(e))
                .count() as u64;
            undelivered_total += undelivered;
            let depth = broker::queue_depth(&connection, &dlq_name(&settings.namespace, flow))
                .await?
                .unwrap_or(0) as u64;
            if undelivered > depth {
                plausible = false;
            }
        }
        let timed_out = started.elapsed() >= settings.wait;
        if plausible || timed_out {
            let mut dead_letters = HashMap::new();
            let mut all = true;
            for (flow, entries) in &by_flow {
                let dl = read_dead_letters(&connection, &settings.namespace, flow).await?;
                all &= entries.iter().all(|e| {
                    received.delivered_everywhere(e)
                        || dl.ids.contains(&e.id)
                        || dl.keys.contains(&e.key)
                });
                dead_letters.insert(flow.clone(), dl);
            }
            if all || timed_out {
                break (snapshot, dead_letters);
            }
        }
        if last_line.elapsed() >= Duration::from_secs(5) {
            last_line = Instant::now();
            println!(
                "report: waiting for retries to settle: {undelivered_total} events not yet delivered to every route ({}s)",
                started.elapsed().as_secs()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let settled_after = started.elapsed().as_secs_f64();
    let received = Received::from(&snapshot);
    let metrics: HashMap<&str, &str> = settings
        .metrics
        .iter()
        .map(|(f, u)| (f.as_str(), u.as_str()))
        .collect();

    let mut verdict = Verdict {
        partners: serde_json::to_value(&snapshot.stats)?,
        settled_after_seconds: settled_after,
        ..Verdict::default()
    };
    for (flow, entries) in &by_flow {
        let dl = dead_letters.remove(flow).unwrap_or_default();
        let mut v = FlowVerdict {
            flow: flow.clone(),
            injected: entries.len() as u64,
            ..FlowVerdict::default()
        };
        let mut delivered_order: HashMap<&str, Vec<(u64, u64)>> = HashMap::new();
        for e in entries {
            if !e.valid {
                v.broken += 1;
            }
            let in_dlq = dl.ids.contains(&e.id) || dl.keys.contains(&e.key);
            if in_dlq {
                v.dead_lettered += 1;
                if !e.valid {
                    v.broken_dead_lettered += 1;
                }
            } else if received.delivered_everywhere(e) {
                v.delivered += 1;
                if e.routes.iter().any(|r| {
                    received
                        .get(&e.flow, r, &e.key)
                        .is_some_and(|(_, copies)| copies > 1)
                }) {
                    v.duplicates_at_partners += 1;
                }
                if let (Some(key), Some(seq), Some(route)) =
                    (&e.order_key, e.order_seq, e.routes.first())
                    && let Some((arrival, _)) = received.get(&e.flow, route, &e.key)
                {
                    delivered_order.entry(key).or_default().push((seq, arrival));
                }
            } else {
                v.missing += 1;
                if v.missing_examples.len() < 5 {
                    let seen: Vec<&str> = e
                        .routes
                        .iter()
                        .filter(|r| received.get(&e.flow, r, &e.key).is_some())
                        .map(String::as_str)
                        .collect();
                    v.missing_examples.push(format!(
                        "id {} key {} (routes {:?}, received on {:?})",
                        e.id, e.key, e.routes, seen
                    ));
                }
            }
        }
        if scenario::ORDERED_FLOWS.contains(&flow.as_str()) {
            let mut violations = 0;
            for arrivals in delivered_order.values_mut() {
                arrivals.sort_by_key(|(seq, _)| *seq);
                violations += arrivals.windows(2).filter(|w| w[1].1 < w[0].1).count() as u64;
            }
            v.out_of_order = Some(violations);
        }
        if let Some(url) = metrics.get(flow.as_str()) {
            match scrape(&http, flow, url).await {
                Ok(m) => v.metrics = Some(m),
                Err(e) => println!("report: cannot read {flow}'s metrics at {url}: {e}"),
            }
        }
        verdict.injected += v.injected;
        verdict.delivered += v.delivered;
        verdict.dead_lettered += v.dead_lettered;
        verdict.missing += v.missing;
        verdict.flows.push(v);
    }
    verdict.all_accounted_for = verdict.missing == 0 && verdict.injected > 0;
    print(&verdict);
    if let Some(path) = &settings.json {
        std::fs::write(path, serde_json::to_vec_pretty(&verdict)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let _ = connection.close(200, "OK".into()).await;
    Ok(verdict)
}

fn latency(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".into(),
        Some(s) if s < 1.0 => format!("{:.0}ms", s * 1000.0),
        Some(s) => format!("{s:.2}s"),
    }
}

fn print(v: &Verdict) {
    println!();
    println!("Accounting by event id (ledger vs. partner receipts and DLQs):");
    println!(
        "  {:<24} {:>8} {:>9} {:>8} {:>7} {:>7} | {:>9} {:>7} {:>6} | {:>7} {:>7}",
        "FLOW",
        "INJECTED",
        "DELIVERED",
        "DLQ",
        "MISSING",
        "BROKEN",
        "DELIVERED",
        "RETRIED",
        "DLQ'D",
        "P50",
        "P99"
    );
    println!(
        "  {:<24} {:>8} {:>9} {:>8} {:>7} {:>7} | {:>25} | {:>15}",
        "", "", "", "", "", "", "worker /metrics", "end-to-end"
    );
    for f in &v.flows {
        let (md, mr, mdl, p50, p99) = match &f.metrics {
            Some(m) => (
                format!("{:.0}", m.delivered),
                format!("{:.0}", m.retried),
                format!("{:.0}", m.dead_lettered),
                latency(m.p50_seconds),
                latency(m.p99_seconds),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
        };
        println!(
            "  {:<24} {:>8} {:>9} {:>8} {:>7} {:>7} | {:>9} {:>7} {:>6} | {:>7} {:>7}",
            f.flow,
            f.injected,
            f.delivered,
            f.dead_lettered,
            f.missing,
            f.broken,
            md,
            mr,
            mdl,
            p50,
            p99
        );
        for example in &f.missing_examples {
            println!("      missing: {example}");
        }
    }
    println!();
    let s = &v.partners;
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    println!(
        "ERP (simulated): {} requests, {} postings recorded; injected faults: {} x 503 (random and outage), {} x 422 rejected, {} responses lost after posting; {} repeats absorbed by idempotency keys",
        n("erpRequests"),
        n("erpPosted"),
        n("erpUnavailable"),
        n("erpRejected"),
        n("erpLostResponses"),
        n("erpDuplicates")
    );
    println!(
        "WMS/TMS inbound: {} messages, {} repeats of a key already received",
        n("amqpMessages"),
        n("amqpDuplicates")
    );
    let broken: u64 = v.flows.iter().map(|f| f.broken).sum();
    let broken_dl: u64 = v.flows.iter().map(|f| f.broken_dead_lettered).sum();
    println!(
        "Contract violations injected: {broken}, dead-lettered on their first attempt: {broken_dl}"
    );
    for f in &v.flows {
        if let Some(o) = f.out_of_order {
            println!(
                "Ordering ({}): {} delivered events, {o} arrived before an earlier event of the same shipment",
                f.flow, f.delivered
            );
        }
    }
    println!();
    if v.all_accounted_for {
        println!(
            "All {} injected events are accounted for: {} delivered to every route, {} dead-lettered, 0 missing (settled after {:.0}s).",
            v.injected, v.delivered, v.dead_lettered, v.settled_after_seconds
        );
    } else if v.injected == 0 {
        println!("NOT ACCOUNTED: the ledger holds no events.");
    } else {
        println!(
            "NOT ACCOUNTED: {} of {} injected events are neither delivered to every route nor in a DLQ ({} delivered, {} dead-lettered).",
            v.missing, v.injected, v.delivered, v.dead_lettered
        );
    }
}
