//! The prefetch byte budget against the real RabbitMQ: a flow holds at most `--prefetch-bytes`
//! of message bodies in process, whatever its prefetch count lets the broker send ahead.
//!
//! The same events go to a slow HTTP destination twice: with the default budget, the flow's
//! prefetch of 50 puts several requests in flight at once; with a budget smaller than one body,
//! each body runs alone, so the destination never sees two requests at a time. The first run
//! shows the destination can see concurrency, so the second fails when the budget is ignored.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use millrace_testkit::TestVhost;
use millrace_worker::{RunningWorker, WorkerOptions};
use support::*;

const EVENTS: usize = 8;

/// A destination that holds each request 150 ms and remembers the most it held at once.
struct SlowDestination {
    base: String,
    served: Arc<AtomicUsize>,
    most_at_once: Arc<AtomicUsize>,
}

async fn slow_destination() -> SlowDestination {
    let now = Arc::new(AtomicUsize::new(0));
    let most_at_once = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let (n, most, count) = (now.clone(), most_at_once.clone(), served.clone());
    let app = axum::Router::new().fallback(move || {
        let (n, most, count) = (n.clone(), most.clone(), count.clone());
        async move {
            let at_once = n.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(at_once, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(150)).await;
            n.fetch_sub(1, Ordering::SeqCst);
            count.fetch_add(1, Ordering::SeqCst);
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    SlowDestination {
        base: format!("http://{addr}/api"),
        served,
        most_at_once,
    }
}

async fn start_with_budget(
    vhost: &TestVhost,
    flow: &str,
    base: &str,
    prefetch_bytes: usize,
) -> RunningWorker {
    let options = WorkerOptions {
        prefetch_bytes,
        ..test_options(vhost)
    };
    start_worker_with(config("plant-berlin", flow, base), options).await
}

/// Runs `EVENTS` events for the Berlin plant (the HTTP route's) through a worker with
/// `prefetch_bytes`; the most requests the destination held at once.
async fn most_at_once(vhost: &TestVhost, flow: &str, prefetch_bytes: usize) -> usize {
    let ch = confirm_channel(vhost).await;
    let dest = slow_destination().await;
    let worker = start_with_budget(vhost, flow, &dest.base, prefetch_bytes).await;
    for i in 0..EVENTS {
        let order = format!("{flow}-{i}");
        publish(
            &ch,
            "production.completed.berlin",
            &event(&order, "berlin", 1.0),
            event_properties(&order),
        )
        .await;
    }
    for _ in 0..300 {
        if dest.served.load(Ordering::SeqCst) >= EVENTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        dest.served.load(Ordering::SeqCst),
        EVENTS,
        "every event reaches the destination"
    );
    // Settling follows the answer; give the last one a moment to give its bytes back.
    for _ in 0..100 {
        let held = metric(
            worker.addr,
            &format!("millrace_inflight_bytes{{flow=\"plant-berlin/{flow}\"}}"),
        )
        .await;
        if held == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(
            worker.addr,
            &format!("millrace_inflight_bytes{{flow=\"plant-berlin/{flow}\"}}"),
        )
        .await,
        0.0,
        "every reservation is given back"
    );
    worker.shutdown().await;
    dest.most_at_once.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_holds_no_more_bodies_than_its_byte_budget() {
    let vhost = TestVhost::create("worker-prefetch-bytes").await;
    let roomy = most_at_once(
        &vhost,
        "roomy",
        millrace_worker::runtime::DEFAULT_PREFETCH_BYTES,
    )
    .await;
    assert!(
        roomy >= 2,
        "with room for every body, requests overlap (the destination saw {roomy} at most)"
    );
    let tight = most_at_once(&vhost, "tight", 16).await;
    assert_eq!(
        tight, 1,
        "a budget smaller than one body runs each body alone"
    );
}
