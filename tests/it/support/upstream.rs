//! An upstream double for the mirror tests: an HTTP server on `127.0.0.1:0` with a configurable
//! [`Answer`] per path (query included), GET and HEAD counts per path, and stop/restart on the
//! same port. Every response closes its connection, so a stopped double is really unreachable.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long `stop` waits for in-flight responses before giving up on them.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a [`Answer::Cut`] body pauses after its bytes, before the connection drops.
const CUT_PAUSE: Duration = Duration::from_millis(200);

/// What the double answers for one path.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// `200` with these bytes.
    Bytes(Bytes),
    /// This status, with a short text body.
    Status(u16),
    /// `200` with these bytes, `chunk` bytes at a time, sleeping `delay` before each chunk.
    Slow {
        bytes: Bytes,
        chunk: usize,
        delay: Duration,
    },
    /// `200` announcing the full `Content-Length`, then the connection drops after `after` bytes.
    Cut { bytes: Bytes, after: usize },
    /// `302 Found` to this URL.
    Redirect(String),
    /// `200` with `size` bytes that differ for every GET (a mutable upstream): the n-th GET
    /// gets [`changing_bytes`]`(size, n)`, half of it at once and the rest after `delay`.
    Changing { size: usize, delay: Duration },
    /// `200` with these bytes and these extra header lines, appended in order (a name may
    /// repeat: each pair is its own line).
    WithHeaders {
        bytes: Bytes,
        headers: Vec<(String, String)>,
    },
}

/// Requests seen for one path.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hits {
    pub(crate) get: u32,
    pub(crate) head: u32,
}

#[derive(Debug, Default)]
struct Shared {
    answers: Mutex<HashMap<String, Answer>>,
    hits: Mutex<HashMap<String, Hits>>,
}

/// The double. Answers and hit counts survive a stop/restart.
#[derive(Debug)]
pub(crate) struct Upstream {
    port: u16,
    shared: Arc<Shared>,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Upstream {
    /// Starts on `127.0.0.1:0`; every path answers `404` until set.
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let port = listener.local_addr().expect("local addr").port();
        let mut upstream = Self {
            port,
            shared: Arc::default(),
            running: None,
        };
        upstream.serve(listener);
        upstream
    }

    /// Starts serving these files (path -> bytes) at once; every other path answers `404`.
    pub(crate) async fn start_with_files(
        files: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Self {
        let upstream = Self::start().await;
        for (path, bytes) in files {
            upstream.serve_bytes(&path, bytes);
        }
        upstream
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/", any(answer))
            .route("/{*path}", any(answer))
            .with_state(Arc::clone(&self.shared));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .expect("upstream serve");
        });
        self.running = Some((tx, task));
    }

    /// Stops listening; waits (bounded) for in-flight responses.
    pub(crate) async fn stop(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            let abort = task.abort_handle();
            if tokio::time::timeout(STOP_TIMEOUT, task).await.is_err() {
                abort.abort();
                panic!("upstream did not stop within {STOP_TIMEOUT:?}");
            }
        }
    }

    /// Listens again on the same port (retrying the bind for up to 5 s).
    pub(crate) async fn restart(&mut self) {
        assert!(self.running.is_none(), "restart after stop");
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebinding 127.0.0.1:{}: {e}; retrying", self.port);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("rebind 127.0.0.1:{}: {e}", self.port),
            }
        };
        self.serve(listener);
    }

    /// The port it listens on (kept across restarts).
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// A mirror-policy folder allowing this upstream (loopback, so `allow_private`).
    pub(crate) fn policy_dir(&self) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let toml = format!(
            "[[upstream]]\nprefix = \"{}/\"\nallow_private = true\n",
            self.origin()
        );
        std::fs::write(dir.path().join("policy.toml"), toml).expect("policy");
        dir
    }

    /// `127.0.0.1:PORT`.
    pub(crate) fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn origin(&self) -> String {
        format!("http://{}", self.host())
    }

    /// The full URL of `path` (which starts with `/`).
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    /// Answers `path` (with its query, if any) this way from now on.
    pub(crate) fn set(&self, path: &str, answer: Answer) {
        self.shared
            .answers
            .lock()
            .expect("answers lock")
            .insert(path.to_owned(), answer);
    }

    /// Serves `bytes` at `path` from now on.
    pub(crate) fn serve_bytes(&self, path: &str, bytes: impl Into<Bytes>) {
        self.set(path, Answer::Bytes(bytes.into()));
    }

    /// Requests seen for `path` (with its query, if any).
    pub(crate) fn hits(&self, path: &str) -> Hits {
        self.shared
            .hits
            .lock()
            .expect("hits lock")
            .get(path)
            .copied()
            .unwrap_or_default()
    }

    /// GETs seen for `path`.
    pub(crate) fn gets(&self, path: &str) -> u32 {
        self.hits(path).get
    }

    /// Requests seen (GET and HEAD together) for every path asked for so far.
    pub(crate) fn hits_by_path(&self) -> BTreeMap<String, u32> {
        self.shared
            .hits
            .lock()
            .expect("hits lock")
            .iter()
            .map(|(path, h)| (path.clone(), h.get + h.head))
            .collect()
    }

    /// Requests seen for every path together.
    pub(crate) fn total_requests(&self) -> u32 {
        self.shared
            .hits
            .lock()
            .expect("hits lock")
            .values()
            .map(|h| h.get + h.head)
            .sum()
    }
}

async fn answer(State(shared): State<Arc<Shared>>, method: Method, uri: Uri) -> Response {
    let key = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), ToString::to_string);
    let nth_get = {
        let mut hits = shared.hits.lock().expect("hits lock");
        let h = hits.entry(key.clone()).or_default();
        if method == Method::HEAD {
            h.head += 1;
        } else {
            h.get += 1;
        }
        h.get
    };
    let found = shared
        .answers
        .lock()
        .expect("answers lock")
        .get(&key)
        .cloned();
    let mut response = match found {
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
        Some(Answer::Status(code)) => (
            StatusCode::from_u16(code).expect("valid status"),
            format!("status {code}\n"),
        )
            .into_response(),
        Some(Answer::Redirect(to)) => (StatusCode::FOUND, [(header::LOCATION, to)]).into_response(),
        Some(Answer::Bytes(bytes)) => full_length(bytes.len(), Body::from(bytes)),
        Some(Answer::Slow {
            bytes,
            chunk,
            delay,
        }) => {
            let len = bytes.len();
            let chunks = (0..len).step_by(chunk.max(1)).map(move |start| {
                let part = bytes.slice(start..len.min(start + chunk.max(1)));
                async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, std::io::Error>(part)
                }
            });
            let stream = futures::stream::iter(chunks).then(|f| f);
            full_length(len, Body::from_stream(stream))
        }
        Some(Answer::Changing { size, delay }) => {
            let bytes = Bytes::from(changing_bytes(size, nth_get));
            let (first, rest) = (bytes.slice(..size / 2), bytes.slice(size / 2..));
            let stream = futures::stream::iter([Ok::<_, std::io::Error>(first)]).chain(
                futures::stream::once(async move {
                    tokio::time::sleep(delay).await;
                    Ok(rest)
                }),
            );
            full_length(size, Body::from_stream(stream))
        }
        Some(Answer::WithHeaders { bytes, headers }) => {
            let mut r = full_length(bytes.len(), Body::from(bytes));
            for (name, value) in headers {
                r.headers_mut().append(
                    header::HeaderName::try_from(name).expect("header name"),
                    header::HeaderValue::try_from(value).expect("header value"),
                );
            }
            r
        }
        Some(Answer::Cut { bytes, after }) => {
            let len = bytes.len();
            let head = bytes.slice(..after.min(len));
            // The pause lets the headers and the first bytes reach the client before the drop.
            let stream = futures::stream::iter([Ok(head)]).chain(futures::stream::once(async {
                tokio::time::sleep(CUT_PAUSE).await;
                Err(std::io::Error::other("upstream double cuts the body here"))
            }));
            full_length(len, Body::from_stream(stream))
        }
    };
    if method == Method::HEAD {
        *response.body_mut() = Body::empty();
    }
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// A `200` that announces `len` bytes, whatever the body then delivers.
fn full_length(len: usize, body: Body) -> Response {
    let mut r = Response::new(body);
    r.headers_mut().insert(header::CONTENT_LENGTH, len.into());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    r
}

/// What the `n`-th GET of an [`Answer::Changing`] path gets: `size` bytes, other for each `n`.
pub(crate) fn changing_bytes(size: usize, n: u32) -> Vec<u8> {
    let n = n.to_le_bytes();
    (0..size)
        .map(|i| n[i % 4] ^ u8::try_from(i % 251).expect("under 251"))
        .collect()
}
