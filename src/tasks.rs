//! The one place that moves blocking work (git2, filesystem walks, large hashing) off the
//! async runtime, carrying the caller's tracing span into the worker thread, and the one place
//! that starts OS threads. `clippy.toml` disallows `tokio::task::spawn_blocking`,
//! `std::thread::spawn` and `std::thread::Builder::spawn` everywhere else, so a new thread or
//! blocking hop is one of these functions, never a hand-rolled one.
#![allow(
    clippy::disallowed_methods,
    reason = "the one module allowed to start threads and blocking tasks"
)]

use tracing::Instrument as _;

/// A blocking task that panicked or was cancelled.
#[derive(Debug, thiserror::Error)]
#[error("blocking task failed: {0}")]
pub struct TaskError(String);

/// Why [`run_with_stack`] has no result.
#[derive(Debug, thiserror::Error)]
pub enum ThreadError {
    /// The thread could not start.
    #[error("cannot start the thread: {0}")]
    Start(#[source] std::io::Error),
    /// The work panicked.
    #[error("the thread panicked")]
    Panicked,
}

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

/// Runs `f` on a thread of its own at the lowest CPU priority (`nice` 19), inside the current
/// span: for deferred work (such as digests computed after a transfer) that must never take
/// CPU from serving requests. The priority is the thread's own, so nothing else is slowed.
///
/// # Errors
/// [`TaskError`] when the thread cannot start or `f` panics.
pub async fn spawn_idle<F, R>(name: &str, f: F) -> Result<R, TaskError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let span = tracing::Span::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            // On Linux a thread's nice value is its own; where lowering fails, the work
            // still runs, at normal priority.
            if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19)
            {
                tracing::debug!(error = %e, "could not lower a background thread's priority");
            }
            let _ = tx.send(span.in_scope(f));
        })
        .map_err(|e| TaskError(e.to_string()))?;
    rx.await
        .map_err(|_| TaskError("the background thread panicked".to_owned()))
}

/// Starts a named OS thread running `f` inside the current span: for work that lives as long
/// as one transfer and blocks on its queue between batches (the fill's hashing and spooling),
/// which would otherwise hold a thread of tokio's blocking pool for its whole length.
///
/// # Errors
/// When the thread cannot start.
pub fn spawn_thread<F>(name: &str, f: F) -> std::io::Result<()>
where
    F: FnOnce() + Send + 'static,
{
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || span.in_scope(f))
        .map(drop)
}

/// Starts a named OS thread that runs `f` (inside the current span) and can be joined: the
/// HTTP workers, each with a runtime of its own.
///
/// # Errors
/// When the thread cannot start.
pub fn spawn_joinable<F, T>(name: String, f: F) -> std::io::Result<std::thread::JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name(name)
        .spawn(move || span.in_scope(f))
}

/// Runs `f` to completion on a new named thread with a stack of `stack_bytes` (reserved, and
/// touched only as deep as `f` goes), blocking the caller until it ends: for a recursive parser
/// whose depth is bounded by its input checks, not by the caller's stack.
///
/// # Errors
/// [`ThreadError`] when the thread cannot start or `f` panics.
pub fn run_with_stack<F, T>(name: &str, stack_bytes: usize, f: F) -> Result<T, ThreadError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_owned())
        .stack_size(stack_bytes)
        .spawn(f)
        .map_err(ThreadError::Start)?
        .join()
        .map_err(|_| ThreadError::Panicked)
}

/// Runs `f` on tokio's blocking pool inside the current span without waiting for it: for
/// clean-up started from a `Drop` (a work folder of a request that was cut off). Outside a
/// runtime, `f` runs on the calling thread.
pub fn spawn_blocking_detached<F>(f: F)
where
    F: FnOnce() + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            let span = tracing::Span::current();
            drop(handle.spawn_blocking(move || span.in_scope(f)));
        }
        Err(_) => f(),
    }
}
