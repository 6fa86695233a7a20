//! HTTP ingress and hot reload against the real RabbitMQ.

mod support;

use std::time::Duration;

use millrace_crds::flow::IngressAuthType;
use millrace_crds::worker_config::{SecretSource, SourceConfig};
use millrace_testkit::TestVhost;
use millrace_worker::source::http::sign;
use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_answers_202_only_for_good_signed_json_and_the_event_is_delivered() {
    let vhost = TestVhost::create("worker-ingress").await;
    let dest = destination(|_| 200).await;
    let mut cfg = config("plant-berlin", "tms-ingest", &dest.base);
    cfg.flows[0].source = SourceConfig::Http {
        path: "/hooks/tms".into(),
        auth: IngressAuthType::HmacSha256,
        secret: SecretSource {
            env: "TEST_INGRESS_KEY".into(),
            secret_name: "ingress".into(),
            secret_key: "key".into(),
        },
    };
    let worker = start_worker(&vhost, cfg).await;
    let ch = confirm_channel(&vhost).await;
    let canonical = sink_queue(&ch, "canonical").await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/ingest/tms-ingest", worker.ingress_addr);
    let body = serde_json::to_vec(&json!({"orderId": "T-1", "site": "lyon", "qty": 4})).unwrap();

    let post = |url: String, body: Vec<u8>, sig: Option<String>, ct: &'static str| {
        let mut r = http
            .post(url)
            .header("content-type", ct)
            .header("ce-type", EVENT_TYPE)
            .header("ce-id", "ingress-1")
            .body(body);
        if let Some(s) = sig {
            r = r.header("x-millrace-signature", s);
        }
        async move { r.send().await.expect("ingress answers").status().as_u16() }
    };
    let good_sig = sign(b"ingress-key", &body);
    assert_eq!(
        post(url.clone(), body.clone(), None, "application/json").await,
        401
    );
    assert_eq!(
        post(
            url.clone(),
            body.clone(),
            Some(sign(b"wrong", &body)),
            "application/json"
        )
        .await,
        401
    );
    assert_eq!(
        post(
            url.clone(),
            body.clone(),
            Some(good_sig.clone()),
            "text/plain"
        )
        .await,
        415
    );
    let junk = b"{not json".to_vec();
    assert_eq!(
        post(
            url.clone(),
            junk.clone(),
            Some(sign(b"ingress-key", &junk)),
            "application/json"
        )
        .await,
        400
    );
    let big = vec![b' '; 2 * 1024 * 1024];
    assert_eq!(
        post(
            url.clone(),
            big.clone(),
            Some(sign(b"ingress-key", &big)),
            "application/json"
        )
        .await,
        413
    );
    assert_eq!(
        post(
            format!("http://{}/ingest/no-such-flow", worker.ingress_addr),
            body.clone(),
            Some(good_sig.clone()),
            "application/json"
        )
        .await,
        404
    );
    assert_eq!(
        post(
            url.clone(),
            body.clone(),
            Some(good_sig.clone()),
            "application/json"
        )
        .await,
        202
    );
    // The configured path works too.
    assert_eq!(
        post(
            format!("http://{}/hooks/tms", worker.ingress_addr),
            body.clone(),
            Some(good_sig),
            "application/json"
        )
        .await,
        202
    );

    // Both accepted requests carry the same ce-id and idempotency key: one delivery.
    let got = collect(
        &ch,
        &canonical,
        1,
        Duration::from_secs(20),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(
        got.len(),
        1,
        "one delivery for two identical ingress requests"
    );
    assert_eq!(got[0].header("ce-id").as_deref(), Some("ingress-1"));
    assert_eq!(got[0].json()["order"], "T-1");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_good_config_keeps_the_old_on_a_bad_one_and_loses_nothing() {
    let vhost = TestVhost::create("worker-reload").await;
    let dest = destination(|_| 200).await;
    let cfg = config("plant-berlin", "reload", &dest.base);
    let worker = start_worker(&vhost, cfg.clone()).await;
    let ch = confirm_channel(&vhost).await;
    let canonical = sink_queue(&ch, "canonical").await;

    let n = 200;
    let publisher = {
        let ch = confirm_channel(&vhost).await;
        tokio::spawn(async move {
            for i in 0..n {
                publish(
                    &ch,
                    "production.completed.lyon",
                    &event(&format!("r-{i}"), "lyon", 2.0),
                    event_properties(&format!("r-{i}")),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    // A bad reload (jq that does not parse) is refused; the old config keeps running.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut bad = cfg.clone();
    bad.flows[0].routes[1].when = Some(".qty >".into());
    worker.reload(bad).await;

    // A good reload mid-stream: the factor doubles qty from now on.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut good = cfg.clone();
    good.flows[0]
        .transform
        .as_mut()
        .unwrap()
        .args
        .insert("factor".into(), json!(2));
    worker.reload(good).await;
    publisher.await.unwrap();

    let got = collect(
        &ch,
        &canonical,
        n,
        Duration::from_secs(30),
        Duration::from_secs(2),
    )
    .await;
    let mut ids: Vec<String> = got
        .iter()
        .map(|r| r.json()["order"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "every event delivered across the reloads");
    let doubled = got
        .iter()
        .filter(|r| r.json()["qty"].as_f64() == Some(4.0))
        .count();
    assert!(doubled > 0, "the good reload took effect");
    assert_eq!(
        metric(
            worker.addr,
            "millrace_config_reloads_total{outcome=\"rejected\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            worker.addr,
            "millrace_config_reloads_total{outcome=\"applied\"}"
        )
        .await,
        1.0
    );
    worker.shutdown().await;
}
