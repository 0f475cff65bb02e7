//! The one place that moves blocking work (git2, filesystem walks, large hashing) off the
//! async runtime, carrying the caller's tracing span into the worker thread.

use tracing::Instrument as _;

/// A blocking task that panicked or was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("blocking task failed: {0}")]
pub struct TaskError(String);

/// Runs `f` on tokio's blocking pool inside the current span.
///
/// # Errors
/// [`TaskError`] when the task panics or the runtime shuts down first.
pub async fn spawn_blocking<F, R>(f: F) -> Result<R, TaskError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .in_current_span()
        .await
        .map_err(|e| TaskError(e.to_string()))
}
