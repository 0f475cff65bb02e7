//! Deadlines on every call into a storage role's backend, so a backend that accepts
//! connections but never answers (a stopped process, a black-holed network) costs a request a
//! few seconds instead of object_store's three-minute retry budget.
//!
//! Two limits: the *answer* deadline bounds how long a call waits for the backend's first
//! answer (a head, a put, a delete, a get's or a listing's first response), the *stall*
//! deadline bounds the gap between two chunks of a streamed body or listing. A put (or an
//! upload part) sends its body before the answer comes: it gets both.

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt as _, StreamExt as _};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
    UploadPart,
};

/// The two deadlines on backend calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Longest wait for the backend's first answer to a call.
    pub answer: Duration,
    /// Longest gap between two chunks of a streamed body or listing.
    pub stall: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            answer: Duration::from_millis(5000),
            stall: Duration::from_millis(10_000),
        }
    }
}

/// The error a call that ran past a deadline fails with, inside
/// [`object_store::Error::Generic`]; the storage facade turns it into
/// [`super::StorageError::Timeout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineExceeded {
    /// Which deadline: `answer` or `stall`.
    pub which: &'static str,
    /// Its length.
    pub millis: u64,
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the backend did not answer within {} ms ({} deadline)",
            self.millis, self.which
        )
    }
}

impl std::error::Error for DeadlineExceeded {}

/// The [`DeadlineExceeded`] inside an object_store error, if that is what it is.
pub(super) fn exceeded(e: &object_store::Error) -> Option<DeadlineExceeded> {
    match e {
        object_store::Error::Generic { source, .. } => {
            source.downcast_ref::<DeadlineExceeded>().copied()
        }
        _ => None,
    }
}

fn expired(which: &'static str, limit: Duration) -> object_store::Error {
    object_store::Error::Generic {
        store: "deadline",
        source: Box::new(DeadlineExceeded {
            which,
            millis: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
        }),
    }
}

async fn within<T>(
    which: &'static str,
    limit: Duration,
    f: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| Err(expired(which, limit)))
}

/// A stream whose first item must come within `first` and every later one within `stall`;
/// after a deadline error it ends.
fn paced<T: Send + 'static>(
    inner: BoxStream<'static, Result<T>>,
    first: Duration,
    stall: Duration,
) -> BoxStream<'static, Result<T>> {
    futures::stream::unfold(
        (inner, true, false),
        move |(mut inner, is_first, done)| async move {
            if done {
                return None;
            }
            let (which, limit) = if is_first {
                ("answer", first)
            } else {
                ("stall", stall)
            };
            match tokio::time::timeout(limit, inner.next()).await {
                Ok(Some(item)) => Some((item, (inner, false, false))),
                Ok(None) => None,
                Err(_) => Some((Err(expired(which, limit)), (inner, false, true))),
            }
        },
    )
    .boxed()
}

/// An [`ObjectStore`] whose every call runs under [`Deadlines`].
#[derive(Debug)]
pub(super) struct DeadlineStore {
    inner: Arc<dyn ObjectStore>,
    deadlines: Deadlines,
}

impl DeadlineStore {
    pub(super) fn new(inner: Arc<dyn ObjectStore>, deadlines: Deadlines) -> Self {
        Self { inner, deadlines }
    }

    fn answer<'a, T: Send + 'a>(
        &self,
        f: impl Future<Output = Result<T>> + Send + 'a,
    ) -> BoxFuture<'a, Result<T>> {
        within("answer", self.deadlines.answer, f).boxed()
    }
}

impl fmt::Display for DeadlineStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (with deadlines)", self.inner)
    }
}

// The methods are written out as `async_trait` expands them (the crate is not a dependency).
impl ObjectStore for DeadlineStore {
    fn put_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> BoxFuture<'c, Result<PutResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        // The body goes out before the answer comes: it may take a stall deadline more.
        let limit = self.deadlines.answer + self.deadlines.stall;
        within(
            "answer",
            limit,
            self.inner.put_opts(location, payload, opts),
        )
        .boxed()
    }

    fn put_multipart_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        opts: PutMultipartOptions,
    ) -> BoxFuture<'c, Result<Box<dyn MultipartUpload>>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        let deadlines = self.deadlines;
        let start = self.inner.put_multipart_opts(location, opts);
        async move {
            let inner = within("answer", deadlines.answer, start).await?;
            Ok(Box::new(DeadlineUpload { inner, deadlines }) as Box<dyn MultipartUpload>)
        }
        .boxed()
    }

    fn get_opts<'a, 'b, 'c>(
        &'a self,
        location: &'b Path,
        options: GetOptions,
    ) -> BoxFuture<'c, Result<GetResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        let deadlines = self.deadlines;
        let get = self.inner.get_opts(location, options);
        async move {
            let mut result = within("answer", deadlines.answer, get).await?;
            if let GetResultPayload::Stream(body) = result.payload {
                // The answer came; from here on the body may only pause for `stall`.
                result.payload =
                    GetResultPayload::Stream(paced(body, deadlines.stall, deadlines.stall));
            }
            Ok(result)
        }
        .boxed()
    }

    fn get_ranges<'a, 'b, 'c, 'd>(
        &'a self,
        location: &'b Path,
        ranges: &'c [Range<u64>],
    ) -> BoxFuture<'d, Result<Vec<Bytes>>>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        // Whole ranges come back at once: the answer deadline plus one stall per range.
        let limit = self.deadlines.answer + self.deadlines.stall;
        within("answer", limit, self.inner.get_ranges(location, ranges)).boxed()
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let d = self.deadlines;
        paced(self.inner.delete_stream(locations), d.answer, d.answer)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let d = self.deadlines;
        paced(self.inner.list(prefix), d.answer, d.stall)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let d = self.deadlines;
        paced(
            self.inner.list_with_offset(prefix, offset),
            d.answer,
            d.stall,
        )
    }

    fn list_with_delimiter<'a, 'b, 'c>(
        &'a self,
        prefix: Option<&'b Path>,
    ) -> BoxFuture<'c, Result<ListResult>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        self.answer(self.inner.list_with_delimiter(prefix))
    }

    fn copy_opts<'a, 'b, 'c, 'd>(
        &'a self,
        from: &'b Path,
        to: &'c Path,
        options: CopyOptions,
    ) -> BoxFuture<'d, Result<()>>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        self.answer(self.inner.copy_opts(from, to, options))
    }

    fn rename_opts<'a, 'b, 'c, 'd>(
        &'a self,
        from: &'b Path,
        to: &'c Path,
        options: RenameOptions,
    ) -> BoxFuture<'d, Result<()>>
    where
        'a: 'd,
        'b: 'd,
        'c: 'd,
        Self: 'd,
    {
        // A copy then a delete on most backends: two answers.
        let limit = self.deadlines.answer * 2;
        within("answer", limit, self.inner.rename_opts(from, to, options)).boxed()
    }
}

/// A multipart upload whose parts may each take the answer plus the stall deadline, and whose
/// completion and abort the answer deadline. An abort that times out fails; it never panics.
#[derive(Debug)]
struct DeadlineUpload {
    inner: Box<dyn MultipartUpload>,
    deadlines: Deadlines,
}

impl MultipartUpload for DeadlineUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        // A part is a body sent and an answer awaited.
        let limit = self.deadlines.answer + self.deadlines.stall;
        within("answer", limit, self.inner.put_part(data)).boxed()
    }

    fn complete<'a, 'b>(&'a mut self) -> BoxFuture<'b, Result<PutResult>>
    where
        'a: 'b,
        Self: 'b,
    {
        within("answer", self.deadlines.answer, self.inner.complete()).boxed()
    }

    fn abort<'a, 'b>(&'a mut self) -> BoxFuture<'b, Result<()>>
    where
        'a: 'b,
        Self: 'b,
    {
        within("answer", self.deadlines.answer, self.inner.abort()).boxed()
    }
}

#[cfg(test)]
mod tests;
