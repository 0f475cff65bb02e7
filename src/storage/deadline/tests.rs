use super::*;
use object_store::memory::InMemory;
use object_store::{GetResultPayload, ObjectStoreExt as _};

/// What the double does when called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Passes every call to an in-memory store.
    None,
    /// Never answers (a stopped backend).
    Hang,
    /// Answers gets and listings with one item, then never sends the next.
    StallAfterFirst,
}

/// A store double: an in-memory store behind a fault (hangs are hard to produce otherwise).
#[derive(Debug)]
struct Faulty {
    inner: InMemory,
    fault: Fault,
}

impl fmt::Display for Faulty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({:?})", self.fault)
    }
}

impl Faulty {
    fn gate<'a, T: Send + 'a>(
        &self,
        f: impl Future<Output = Result<T>> + Send + 'a,
    ) -> BoxFuture<'a, Result<T>> {
        if self.fault == Fault::Hang {
            futures::future::pending().boxed()
        } else {
            f.boxed()
        }
    }

    fn stall<T: Send + 'static>(
        &self,
        s: BoxStream<'static, Result<T>>,
    ) -> BoxStream<'static, Result<T>> {
        match self.fault {
            Fault::None => s,
            Fault::Hang => futures::stream::pending().boxed(),
            Fault::StallAfterFirst => s.take(1).chain(futures::stream::pending()).boxed(),
        }
    }
}

impl ObjectStore for Faulty {
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
        self.gate(self.inner.put_opts(location, payload, opts))
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
        self.gate(self.inner.put_multipart_opts(location, opts))
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
        let fault = self.fault;
        let get = self.gate(self.inner.get_opts(location, options));
        async move {
            let mut r = get.await?;
            if fault == Fault::StallAfterFirst
                && let GetResultPayload::Stream(body) = r.payload
            {
                r.payload = GetResultPayload::Stream(
                    body.take(1).chain(futures::stream::pending()).boxed(),
                );
            }
            Ok(r)
        }
        .boxed()
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.stall(self.inner.delete_stream(locations))
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.stall(self.inner.list(prefix))
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
        self.gate(self.inner.list_with_delimiter(prefix))
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
        self.gate(self.inner.copy_opts(from, to, options))
    }
}

const LIMITS: Deadlines = Deadlines {
    answer: Duration::from_millis(200),
    stall: Duration::from_millis(300),
};

async fn store(fault: Fault) -> DeadlineStore {
    let inner = InMemory::new();
    inner
        .put(&Path::from("a/x"), PutPayload::from_static(b"hello"))
        .await
        .unwrap();
    inner
        .put(&Path::from("a/y"), PutPayload::from_static(b"world"))
        .await
        .unwrap();
    DeadlineStore::new(Arc::new(Faulty { inner, fault }), LIMITS)
}

fn deadline_of(e: &object_store::Error) -> DeadlineExceeded {
    exceeded(e).unwrap_or_else(|| panic!("not a deadline error: {e}"))
}

#[tokio::test]
async fn a_fast_store_passes_through_untouched() {
    let s = store(Fault::None).await;
    let x = Path::from("a/x");
    assert_eq!(
        &s.get(&x).await.unwrap().bytes().await.unwrap()[..],
        b"hello"
    );
    assert_eq!(&s.get_range(&x, 1..3).await.unwrap()[..], b"el");
    assert_eq!(s.head(&x).await.unwrap().size, 5);
    let listed: Vec<_> = s
        .list(None)
        .map(|m| m.unwrap().location.to_string())
        .collect()
        .await;
    assert_eq!(listed, ["a/x", "a/y"]);
    s.put(&Path::from("b"), PutPayload::from_static(b"z"))
        .await
        .unwrap();
    s.delete(&Path::from("b")).await.unwrap();
    assert!(matches!(
        s.head(&Path::from("b")).await,
        Err(object_store::Error::NotFound { .. })
    ));
    let mut up = s.put_multipart(&Path::from("m")).await.unwrap();
    up.put_part(PutPayload::from_static(b"part")).await.unwrap();
    up.complete().await.unwrap();
    assert_eq!(
        &s.get(&Path::from("m"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()[..],
        b"part"
    );
}

#[tokio::test]
async fn the_answer_deadline_fires_on_a_hung_store() {
    let s = store(Fault::Hang).await;
    let x = Path::from("a/x");
    // Bounded waits: were a deadline missing, the test fails instead of hanging.
    let bound = Duration::from_secs(10);
    let head = tokio::time::timeout(bound, s.head(&x))
        .await
        .expect("head hung");
    assert_eq!(
        deadline_of(&head.unwrap_err()),
        DeadlineExceeded {
            which: "answer",
            millis: 200
        }
    );
    let get = tokio::time::timeout(bound, s.get(&x))
        .await
        .expect("get hung");
    assert_eq!(deadline_of(&get.unwrap_err()).which, "answer");
    let range = tokio::time::timeout(bound, s.get_range(&x, 0..2))
        .await
        .expect("range hung");
    assert_eq!(deadline_of(&range.unwrap_err()).which, "answer");
    let put = tokio::time::timeout(bound, s.put(&x, PutPayload::from_static(b"z")))
        .await
        .expect("put hung");
    assert_eq!(deadline_of(&put.unwrap_err()).which, "answer");
    let up = tokio::time::timeout(bound, s.put_multipart(&x))
        .await
        .expect("upload hung");
    assert_eq!(deadline_of(&up.unwrap_err()).which, "answer");
    let listed: Vec<_> = tokio::time::timeout(bound, s.list(None).collect::<Vec<_>>())
        .await
        .expect("list hung");
    assert_eq!(listed.len(), 1, "one error, then the listing ends");
    assert_eq!(deadline_of(listed[0].as_ref().unwrap_err()).which, "answer");
    let delete = tokio::time::timeout(bound, s.delete(&x))
        .await
        .expect("delete hung");
    assert_eq!(deadline_of(&delete.unwrap_err()).which, "answer");
    let message = head_message(&s, &x).await;
    assert!(
        message.contains("did not answer within 200 ms"),
        "{message}"
    );
}

async fn head_message(s: &DeadlineStore, x: &Path) -> String {
    s.head(x).await.unwrap_err().to_string()
}

#[tokio::test]
async fn the_stall_deadline_fires_mid_stream() {
    let s = store(Fault::StallAfterFirst).await;
    let bound = Duration::from_secs(10);
    let get = s
        .get(&Path::from("a/x"))
        .await
        .expect("the answer came in time");
    let chunks: Vec<_> = tokio::time::timeout(bound, get.into_stream().collect::<Vec<_>>())
        .await
        .expect("body hung");
    assert_eq!(chunks.len(), 2, "{chunks:?}");
    assert_eq!(&chunks[0].as_ref().unwrap()[..], b"hello");
    assert_eq!(
        deadline_of(chunks[1].as_ref().unwrap_err()),
        DeadlineExceeded {
            which: "stall",
            millis: 300
        }
    );
    let listed: Vec<_> = tokio::time::timeout(bound, s.list(None).collect::<Vec<_>>())
        .await
        .expect("list hung");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0].as_ref().unwrap().location.as_ref(), "a/x");
    assert_eq!(deadline_of(listed[1].as_ref().unwrap_err()).which, "stall");
}
