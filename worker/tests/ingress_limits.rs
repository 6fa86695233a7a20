//! HTTP ingress refuses bodies over `--max-message-bytes` before buffering them, and accepts a
//! body of exactly the limit, against the real RabbitMQ.
//!
//! The oversized requests go over a raw TCP connection, so the test decides when each byte is
//! sent: a server that waited for the whole body could not answer in time.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use millrace_crds::flow::IngressAuthType;
use millrace_crds::worker_config::{SecretSource, SourceConfig, WorkerConfig};
use millrace_testkit::TestVhost;
use millrace_worker::WorkerOptions;
use millrace_worker::source::http::sign;
use serde_json::json;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FLOW: &str = "ingress-limits";
/// How long a response may take; far more than reading 1 MiB on loopback.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The limit the test worker runs with (the worker's default, which `start_worker` keeps).
fn limit() -> usize {
    let limit = WorkerOptions::default().max_message_bytes;
    assert_eq!(limit, 1024 * 1024, "the tests size their bodies for 1 MiB");
    limit
}

fn ingress_config() -> WorkerConfig {
    // No route is HTTP-bound in these tests; the destination only has to parse.
    let mut cfg = config("plant-berlin", FLOW, "http://127.0.0.1:9/api");
    cfg.flows[0].source = SourceConfig::Http {
        path: "/hooks/limits".into(),
        auth: IngressAuthType::HmacSha256,
        secret: SecretSource {
            env: "TEST_INGRESS_KEY".into(),
            secret_name: "ingress".into(),
            secret_key: "key".into(),
        },
    };
    cfg
}

/// A contract-valid event for `order`, padded with spaces to exactly `len` bytes.
fn event_of_len(order: &str, len: usize) -> Vec<u8> {
    let mut body =
        serde_json::to_vec(&json!({"orderId": order, "site": "lyon", "qty": 4})).unwrap();
    assert!(body.len() <= len);
    body.resize(len, b' ');
    body
}

/// `data` in HTTP/1.1 chunked framing, 64 KiB a chunk, without the terminating chunk.
fn chunked(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in data.chunks(64 * 1024) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out
}

const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

fn request_head(path: &str, framing: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         ce-type: {EVENT_TYPE}\r\nconnection: close\r\n{framing}\r\n{extra}\r\n"
    )
}

/// Sends `head` then `body` and returns the first response read back, while keeping the
/// connection open: the body is never finished unless `body` finishes it. Panics with what
/// arrived when no whole response came within [`ANSWER_TIMEOUT`].
async fn exchange(addr: SocketAddr, head: &str, body: &[u8]) -> String {
    let stream = TcpStream::connect(addr).await.expect("ingress accepts");
    let (mut reader, mut writer) = stream.into_split();
    let reading = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            if let Some(response) = whole_response(&got) {
                return response;
            }
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return String::from_utf8_lossy(&got).into_owned(),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    });
    // The server may answer and close while the body is still going out, or stop reading so
    // that the writes block: the answer is what counts, so the sending only ends the sending,
    // and the connection stays open until the answer came.
    let sending = async {
        if writer.write_all(head.as_bytes()).await.is_ok() {
            let _ = writer.write_all(body).await;
        }
        std::future::pending::<()>().await;
    };
    let answer = async {
        tokio::select! {
            response = reading => response.expect("reader task"),
            () = sending => unreachable!("sending never ends"),
        }
    };
    let response = tokio::time::timeout(ANSWER_TIMEOUT, answer)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no answer within {ANSWER_TIMEOUT:?} to a request of {} body bytes while the \
                 connection stayed open: the server waits for more of the body",
                body.len()
            )
        });
    drop(writer);
    response
}

/// The first response in `got` (status line, headers, and a `content-length` body), if whole.
fn whole_response(got: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(got);
    let end = text.find("\r\n\r\n")? + 4;
    let length = text[..end]
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    (text.len() >= end + length).then(|| text[..end + length].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_before_they_are_read_and_a_body_at_the_limit_is_delivered() {
    let limit = limit();
    let vhost = TestVhost::create("worker-ingress-limits").await;
    let worker = start_worker(&vhost, ingress_config()).await;
    let ch = confirm_channel(&vhost).await;
    let canonical = sink_queue(&ch, "canonical").await;
    let addr = worker.ingress_addr;
    let path = format!("/ingest/{FLOW}");

    // A 2 MiB chunked body: only the limit and two more chunks are sent, and the connection
    // then waits. The 413 has to come from what was read so far.
    let two_mib = event_of_len("BIG-1", 2 * limit);
    let sent = &two_mib[..limit + 128 * 1024];
    let response = exchange(
        addr,
        &request_head(&path, "transfer-encoding: chunked", ""),
        &chunked(sent),
    )
    .await;
    assert!(
        response.starts_with("HTTP/1.1 413"),
        "chunked 2 MiB body: {response}"
    );
    assert!(
        response.contains(&limit.to_string()) && response.contains("--max-message-bytes"),
        "the 413 names the limit and the flag: {response}"
    );

    // A Content-Length over the limit is refused on the headers alone: no `100 Continue`,
    // no body sent.
    let response = exchange(
        addr,
        &request_head(
            &path,
            &format!("content-length: {}", 2 * limit),
            "expect: 100-continue\r\n",
        ),
        b"",
    )
    .await;
    assert!(
        response.starts_with("HTTP/1.1 413"),
        "Content-Length over the limit, no body sent: {response}"
    );
    assert!(response.contains("--max-message-bytes"), "{response}");

    // One byte over the limit, chunked and complete, is still refused.
    let over = event_of_len("OVER-1", limit + 1);
    let mut body = chunked(&over);
    body.extend_from_slice(LAST_CHUNK);
    let response = exchange(
        addr,
        &request_head(
            &path,
            "transfer-encoding: chunked",
            &format!("x-millrace-signature: {}\r\n", sign(b"ingress-key", &over)),
        ),
        &body,
    )
    .await;
    assert!(
        response.starts_with("HTTP/1.1 413"),
        "limit + 1: {response}"
    );

    // Exactly the limit is accepted, with a Content-Length and chunked.
    let at_limit = event_of_len("LIMIT-1", limit);
    let status = reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .header("ce-type", EVENT_TYPE)
        .header("ce-id", "limit-1")
        .header("x-millrace-signature", sign(b"ingress-key", &at_limit))
        .body(at_limit)
        .send()
        .await
        .expect("ingress answers")
        .status();
    assert_eq!(status.as_u16(), 202, "a body of exactly the limit");
    let at_limit = event_of_len("LIMIT-2", limit);
    let mut body = chunked(&at_limit);
    body.extend_from_slice(LAST_CHUNK);
    let response = exchange(
        addr,
        &request_head(
            &path,
            "transfer-encoding: chunked",
            &format!(
                "ce-id: limit-2\r\nx-millrace-signature: {}\r\n",
                sign(b"ingress-key", &at_limit)
            ),
        ),
        &body,
    )
    .await;
    assert!(
        response.starts_with("HTTP/1.1 202"),
        "a chunked body of exactly the limit: {response}"
    );

    // Both reach the route; nothing refused does.
    let got = collect(
        &ch,
        &canonical,
        2,
        Duration::from_secs(20),
        Duration::from_secs(2),
    )
    .await;
    let mut orders: Vec<String> = got
        .iter()
        .map(|r| r.json()["order"].as_str().unwrap_or_default().to_string())
        .collect();
    orders.sort();
    assert_eq!(orders, ["LIMIT-1", "LIMIT-2"], "delivered: {got:?}");
    worker.shutdown().await;
}
