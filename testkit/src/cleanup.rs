//! Cleanup from `Drop`, which cannot await.

use std::future::Future;

/// Runs `cleanup` to completion on a runtime of its own, in a thread of its own. The test's runtime may be
/// a single thread that is busy dropping us, so nothing created on it (clients included) may be awaited here.
pub(crate) fn run_detached<F, Fut>(what: String, cleanup: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>>,
{
    let outcome = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(cleanup())
    })
    .join();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("millrace-testkit: could not delete {what}: {e}"),
        Err(_) => eprintln!("millrace-testkit: the cleanup of {what} panicked"),
    }
}
