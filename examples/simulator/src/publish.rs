//! The event sources: the MES, WMS and TMS publish CloudEvents to their exchanges, and the ERP
//! posts released sales orders to the HTTP-ingress flow. An event enters the ledger only once
//! the broker confirmed it (routed, persistent) or the ingress answered 2xx.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hmac::Mac as _;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::broker;
use crate::events::{Generated, Generator};
use crate::ledger;
use crate::scenario::{self, FlowSpec, Source};

/// How the HTTP ingress authenticates the ERP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IngressAuth {
    /// `X-Millrace-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    Hmac,
    /// `Authorization: Bearer <token>`.
    Bearer,
}

/// Settings of `millrace-simulator events`.
pub struct Settings {
    pub amqp_uri: String,
    pub duration: Duration,
    /// Events per second, all flows together.
    pub rate: f64,
    /// Flows to feed; empty means all.
    pub flows: Vec<String>,
    /// Ingress URL per HTTP-source flow.
    pub ingress: HashMap<String, String>,
    pub ingress_auth: IngressAuth,
    /// HMAC key or bearer token of the ingress.
    pub ingress_secret: Option<String>,
    pub ledger: PathBuf,
    /// Share of AMQP events that deliberately violate their contract.
    pub invalid_rate: f64,
    pub seed: u64,
    /// Base URL of the partners process, to switch on an ERP outage mid-run.
    pub partners_url: Option<String>,
    /// Start and length of an ERP outage, counted from the start of the run.
    pub erp_outage: Option<(Duration, Duration)>,
}

#[derive(Default)]
struct FlowCounts {
    injected: u64,
    broken: u64,
    refused: u64,
}

/// Publishes events for `settings.duration`, then prints what was injected.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let flows: Vec<&'static FlowSpec> = if settings.flows.is_empty() {
        scenario::FLOWS.iter().collect()
    } else {
        settings
            .flows
            .iter()
            .map(|name| {
                scenario::flow(name).with_context(|| {
                    format!(
                        "unknown flow {name:?}; the scenario has {:?}",
                        scenario::FLOWS.iter().map(|f| f.name).collect::<Vec<_>>()
                    )
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    for flow in &flows {
        if flow.source == Source::Http && !settings.ingress.contains_key(flow.name) {
            anyhow::bail!(
                "flow {} takes events over HTTP: pass --ingress {}=http://HOST:PORT/ingest/{}",
                flow.name,
                flow.name,
                flow.name
            );
        }
    }
    if settings.rate <= 0.0 {
        anyhow::bail!("--rate must be above 0 events per second");
    }

    let connection = broker::connect(&settings.amqp_uri).await?;
    let channel = connection.create_channel().await?;
    broker::declare_partner_topology(&channel).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let mut ledger = ledger::Writer::append(&settings.ledger)?;

    let run = (chrono::Utc::now().timestamp() as u64 % 10_000) as u32;
    let mut generator = Generator::new(settings.seed, run);
    let mut rng = StdRng::seed_from_u64(settings.seed ^ 0x5eed);
    let total_weight: u32 = flows.iter().map(|f| f.weight).sum();

    if let (Some(url), Some((at, length))) = (&settings.partners_url, settings.erp_outage) {
        let url = url.trim_end_matches('/').to_string();
        let http = http.clone();
        tokio::spawn(async move {
            tokio::time::sleep(at).await;
            if let Err(e) = start_outage(&http, &url, length).await {
                tracing::warn!(error = %e, "could not start the ERP outage");
            } else {
                println!(
                    "events: ERP outage for {}s starts now (503 on every posting)",
                    length.as_secs()
                );
            }
        });
    }

    let started = Instant::now();
    let mut counts: BTreeMap<&'static str, FlowCounts> = BTreeMap::new();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / settings.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_progress = Instant::now();
    while started.elapsed() < settings.duration {
        ticker.tick().await;
        let mut pick = rng.random_range(0..total_weight);
        let flow = flows
            .iter()
            .find(|f| {
                if pick < f.weight {
                    true
                } else {
                    pick -= f.weight;
                    false
                }
            })
            .expect("weights cover the range");
        let broken = flow.source != Source::Http && rng.random_bool(settings.invalid_rate);
        let now = chrono::Utc::now();
        let event = generator.next(flow, now, broken);
        let id = uuid::Uuid::new_v4().to_string();
        let time = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let outcome = match flow.source {
            Source::Amqp {
                exchange,
                routing_key,
                ..
            } => publish_amqp(&channel, flow, exchange, routing_key, &id, &time, &event).await,
            Source::Http => post_ingress(&http, &settings, flow, &id, &time, &event).await,
        };
        let c = counts.entry(flow.name).or_default();
        match outcome {
            Ok(()) => {
                c.injected += 1;
                if !event.valid {
                    c.broken += 1;
                }
                ledger.write(&ledger::Entry {
                    flow: flow.name.to_string(),
                    id,
                    key: event.key,
                    event_type: flow.event_type.to_string(),
                    routes: event.routes,
                    valid: event.valid,
                    order_key: event.order.as_ref().map(|o| o.0.clone()),
                    order_seq: event.order.as_ref().map(|o| o.1),
                    injected_at: time,
                })?;
            }
            Err(e) => {
                c.refused += 1;
                if c.refused <= 3 || c.refused.is_multiple_of(50) {
                    tracing::warn!(flow = flow.name, error = %e, refused = c.refused, "event not accepted; it is not in the ledger");
                }
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(10) {
            last_progress = Instant::now();
            let injected: u64 = counts.values().map(|c| c.injected).sum();
            println!(
                "events: {:>3}s of {}s, {injected} injected ({:.1}/s)",
                started.elapsed().as_secs(),
                settings.duration.as_secs(),
                injected as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let _ = channel.close(200, "OK".into()).await;
    let _ = connection.close(200, "OK".into()).await;

    println!(
        "{:<26} {:>9} {:>9} {:>9}",
        "FLOW", "INJECTED", "BROKEN", "REFUSED"
    );
    for (flow, c) in &counts {
        println!(
            "{flow:<26} {:>9} {:>9} {:>9}",
            c.injected, c.broken, c.refused
        );
    }
    let refused: u64 = counts.values().map(|c| c.refused).sum();
    if refused > 0 {
        println!(
            "events: {refused} events were not accepted by the broker or the ingress; they are not in the ledger and not counted"
        );
    }
    Ok(())
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value.as_bytes().to_vec()))
}

async fn publish_amqp(
    channel: &Channel,
    flow: &FlowSpec,
    exchange: &str,
    routing_key: &str,
    id: &str,
    time: &str,
    event: &Generated,
) -> anyhow::Result<()> {
    let mut headers = FieldTable::default();
    headers.insert("ce-specversion".into(), text("1.0"));
    headers.insert("ce-id".into(), text(id));
    headers.insert("ce-type".into(), text(flow.event_type));
    headers.insert("ce-source".into(), text(flow.ce_source));
    headers.insert("ce-time".into(), text(time));
    headers.insert("ce-subject".into(), text(&event.subject));
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(id.into())
        .with_app_id("millrace-simulator".into())
        .with_timestamp(chrono::Utc::now().timestamp() as u64)
        .with_headers(headers);
    let body = serde_json::to_vec(&event.data)?;
    let confirm = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            &body,
            properties,
        )
        .await?
        .await?;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => anyhow::bail!(
            "unroutable: no queue is bound to {exchange} for {routing_key} (is the flow's topology declared?)"
        ),
        Confirmation::Nack(_) => anyhow::bail!("the broker refused the message (nack)"),
        Confirmation::NotRequested => anyhow::bail!("publisher confirms are off"),
    }
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The `X-Millrace-Signature` value for `body`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn post_ingress(
    http: &reqwest::Client,
    settings: &Settings,
    flow: &FlowSpec,
    id: &str,
    time: &str,
    event: &Generated,
) -> anyhow::Result<()> {
    let url = &settings.ingress[flow.name];
    let body = serde_json::to_vec(&event.data)?;
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-type", flow.event_type)
        .header("ce-source", flow.ce_source)
        .header("ce-time", time)
        .header("ce-subject", &event.subject);
    if let Some(secret) = &settings.ingress_secret {
        request = match settings.ingress_auth {
            IngressAuth::Hmac => {
                request.header("x-millrace-signature", signature(secret.as_bytes(), &body))
            }
            IngressAuth::Bearer => request.bearer_auth(secret),
        };
    }
    let response = request.body(body).send().await?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        let text = response.text().await.unwrap_or_default();
        anyhow::bail!(
            "{url} answered {status}: {}",
            text.chars().take(200).collect::<String>()
        )
    }
}

async fn start_outage(http: &reqwest::Client, base: &str, length: Duration) -> anyhow::Result<()> {
    let mut faults: serde_json::Value = http
        .get(format!("{base}/_sim/faults"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    faults["outageSeconds"] = serde_json::json!(length.as_secs());
    http.post(format!("{base}/_sim/faults"))
        .json(&faults)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn signatures_are_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            super::signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
