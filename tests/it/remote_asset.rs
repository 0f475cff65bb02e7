//! The gRPC door (Remote Asset API, CAS, ByteStream, Capabilities, action cache) on the real
//! server's HTTP port, through a real gRPC client (tonic's, with the generated stubs of
//! `bazel-remote-apis`). Bazel 4.2.3 itself is in `bazel_remote.rs`.

use std::time::Duration;

use base64::Engine as _;
use bazel_remote_apis::build::bazel::remote::asset::v1::fetch_client::FetchClient;
use bazel_remote_apis::build::bazel::remote::asset::v1::push_client::PushClient;
use bazel_remote_apis::build::bazel::remote::asset::v1::{
    FetchBlobRequest, PushBlobRequest, Qualifier,
};
use bazel_remote_apis::build::bazel::remote::execution::v2::action_cache_client::ActionCacheClient;
use bazel_remote_apis::build::bazel::remote::execution::v2::capabilities_client::CapabilitiesClient;
use bazel_remote_apis::build::bazel::remote::execution::v2::content_addressable_storage_client::ContentAddressableStorageClient;
use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ActionResult, BatchReadBlobsRequest, BatchUpdateBlobsRequest, Digest, FindMissingBlobsRequest,
    GetActionResultRequest, GetCapabilitiesRequest, UpdateActionResultRequest,
    batch_update_blobs_request,
};
use bazel_remote_apis::google::bytestream::byte_stream_client::ByteStreamClient;
use bazel_remote_apis::google::bytestream::{ReadRequest, WriteRequest};
use sha2::Digest as _;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::publish::{PUBLISHER, bounded, config_file};
use crate::support::spawned::output_within;
use crate::support::{TestServer, Upstream, example_registry, path_str, sha256_hex};

/// Bound on the Python client.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// A token with the `push` scope.
const PUSHER: &str = "gfr_test_pusher_token";
/// The archive the upstream serves: three 1 MiB chunks and a bit, so reads cross chunks.
const SIZE: usize = 3 * (1 << 20) + 12_345;

fn archive(seed: u8) -> Vec<u8> {
    (0..SIZE)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn sri256(bytes: &[u8]) -> String {
    let digest = sha2::Sha256::digest(bytes);
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

fn sri384(bytes: &[u8]) -> String {
    let digest = sha2::Sha384::digest(bytes);
    format!(
        "sha384-{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

fn q(name: &str, value: &str) -> Qualifier {
    Qualifier {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

fn digest_of(bytes: &[u8]) -> Digest {
    Digest {
        hash: sha256_hex(bytes),
        size_bytes: bytes.len() as i64,
    }
}

/// A server whose policy allows `upstream`, with the test tokens and a `push` token, and
/// `head` as the config file's first lines.
struct Door {
    server: TestServer,
    channel: Channel,
    _dir: tempfile::TempDir,
}

impl Door {
    async fn start(upstream: &Upstream, head: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = crate::bazel_client::write_policy(dir.path(), upstream);
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("mkdir data");
        let extra = format!(
            "[[auth.tokens]]\nname = \"pusher\"\nsha256 = \"{}\"\nscopes = [\"push\"]\n",
            sha256_hex(PUSHER.as_bytes())
        );
        let config = config_file(dir.path(), head, &extra);
        let registry = example_registry();
        let server = TestServer::start_exact(
            &[
                ("registry", path_str(&registry)),
                ("data", path_str(&data)),
                ("mirror-policy", path_str(&policy)),
            ],
            Some(&config),
            &[],
        )
        .await;
        let channel = Channel::from_shared(server.base.clone())
            .expect("endpoint")
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .expect("gRPC connects to the HTTP port");
        Self {
            server,
            channel,
            _dir: dir,
        }
    }

    fn fetch(&self) -> FetchClient<Channel> {
        FetchClient::new(self.channel.clone())
    }

    fn cas(&self) -> ContentAddressableStorageClient<Channel> {
        ContentAddressableStorageClient::new(self.channel.clone())
    }

    fn bytestream(&self) -> ByteStreamClient<Channel> {
        ByteStreamClient::new(self.channel.clone())
    }

    async fn fetch_blob(
        &self,
        uris: &[String],
        qualifiers: Vec<Qualifier>,
    ) -> Result<Digest, tonic::Status> {
        let response = self
            .fetch()
            .fetch_blob(FetchBlobRequest {
                uris: uris.to_vec(),
                qualifiers,
                ..FetchBlobRequest::default()
            })
            .await?
            .into_inner();
        assert!(response.status.is_none(), "an OK carries no error status");
        Ok(response.blob_digest.expect("an OK names a blob"))
    }

    async fn read(&self, d: &Digest, offset: i64, limit: i64) -> Result<Vec<u8>, tonic::Status> {
        let mut stream = self
            .bytestream()
            .read(ReadRequest {
                resource_name: format!("main/blobs/{}/{}", d.hash, d.size_bytes),
                read_offset: offset,
                read_limit: limit,
            })
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(msg) = stream.message().await? {
            assert!(msg.data.len() <= 1 << 20, "messages stay at 1 MiB");
            out.extend_from_slice(&msg.data);
        }
        Ok(out)
    }

    async fn missing(&self, digests: Vec<Digest>) -> Vec<Digest> {
        self.cas()
            .find_missing_blobs(FindMissingBlobsRequest {
                blob_digests: digests,
                ..FindMissingBlobsRequest::default()
            })
            .await
            .expect("FindMissingBlobs")
            .into_inner()
            .missing_blob_digests
    }
}

/// The codes of a batch answer's per-blob statuses (`-1`: none).
fn codes<'a>(
    statuses: impl Iterator<Item = Option<&'a bazel_remote_apis::google::rpc::Status>>,
) -> Vec<i32> {
    statuses.map(|s| s.map_or(-1, |s| s.code)).collect()
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata value"),
    );
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_blob_pulls_through_once_and_bytestream_reads_the_verified_bytes() {
    bounded(async {
        let bytes = archive(1);
        let upstream =
            Upstream::start_with_files([("/a/archive-1.tar.gz".to_owned(), bytes.clone())]).await;
        let door = Door::start(&upstream, "").await;
        let uri = upstream.url("/a/archive-1.tar.gz");

        // Sixteen concurrent fetches of one URL: one upstream GET, one digest for all.
        let calls = (0..16).map(|_| {
            let uri = uri.clone();
            let sri = sri256(&bytes);
            let door = &door;
            async move { door.fetch_blob(&[uri], vec![q("checksum.sri", &sri)]).await }
        });
        let digests = futures::future::join_all(calls).await;
        for d in &digests {
            assert_eq!(d.as_ref().expect("FetchBlob"), &digest_of(&bytes));
        }
        assert_eq!(upstream.gets("/a/archive-1.tar.gz"), 1, "one upstream GET");
        let d = digest_of(&bytes);

        // ByteStream: the whole blob, a range across a chunk boundary, the end, past the end.
        assert!(door.read(&d, 0, 0).await.expect("read") == bytes);
        let from = (1 << 20) - 7;
        assert!(door.read(&d, from as i64, 100).await.expect("range") == bytes[from..from + 100]);
        assert!(door.read(&d, SIZE as i64 - 3, 0).await.expect("tail") == bytes[SIZE - 3..]);
        assert!(
            door.read(&d, SIZE as i64, 0)
                .await
                .expect("at end")
                .is_empty()
        );
        let e = door.read(&d, SIZE as i64 + 1, 0).await.unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
        let wrong_size = Digest {
            size_bytes: 5,
            ..d.clone()
        };
        let e = door.read(&wrong_size, 0, 0).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        let e = door
            .bytestream()
            .read(ReadRequest {
                resource_name: format!("blobs/{}", d.hash),
                ..ReadRequest::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("resource_name"), "{}", e.message());

        // The same blob over HTTP, on the same port.
        let (status, body) = door
            .server
            .get_bytes(&format!("/cas/sha256/{}", d.hash))
            .await;
        assert_eq!(status, 200);
        assert!(body == bytes);

        // FindMissingBlobs and BatchReadBlobs.
        let unknown = digest_of(b"never stored");
        let empty = digest_of(b"");
        let missing = door
            .missing(vec![d.clone(), unknown.clone(), empty.clone()])
            .await;
        assert_eq!(missing, vec![unknown.clone()]);
        let batch = door
            .cas()
            .batch_read_blobs(BatchReadBlobsRequest {
                digests: vec![empty.clone(), unknown.clone()],
                ..BatchReadBlobsRequest::default()
            })
            .await
            .expect("BatchReadBlobs")
            .into_inner();
        let codes = codes(batch.responses.iter().map(|r| r.status.as_ref()));
        assert_eq!(codes, vec![Code::Ok as i32, Code::NotFound as i32]);
        let e = door
            .cas()
            .batch_read_blobs(BatchReadBlobsRequest {
                digests: vec![d.clone(), d.clone()],
                ..BatchReadBlobsRequest::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "over the batch size");

        // Metrics by method and code.
        let metrics = door
            .server
            .get("/metrics")
            .await
            .text()
            .await
            .expect("metrics");
        assert!(
            metrics
                .contains(r#"gf_registry_grpc_calls_total{method="Fetch/FetchBlob",code="OK"} 16"#),
            "{metrics}"
        );
        assert!(
            metrics.contains(r#"method="ByteStream/Read",code="OUT_OF_RANGE""#),
            "{metrics}"
        );
        door.server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_blob_checks_checksums_qualifiers_policy_and_pins() {
    bounded(async {
        let bytes = archive(2);
        let other = archive(3);
        let upstream = Upstream::start_with_files([
            ("/b/list.tar.gz".to_owned(), bytes.clone()),
            ("/b/wrong.tar.gz".to_owned(), bytes.clone()),
            ("/b/pinned.tar.gz".to_owned(), bytes.clone()),
        ])
        .await;
        let door = Door::start(&upstream, "").await;

        // A list of SRIs: any match suffices (here the second, a sha384).
        let list = format!("{} {}", sri256(&other), sri384(&bytes));
        let d = door
            .fetch_blob(
                &[upstream.url("/b/list.tar.gz")],
                vec![
                    q("checksum.sri", &list),
                    q("bazel.canonical_id", "list-1"),
                    q("http_header:Authorization", "Bearer upstream-secret"),
                    q("bazel.auth_headers", "{}"),
                ],
            )
            .await
            .expect("one SRI of the list matches");
        assert_eq!(d, digest_of(&bytes));
        // The canonical id is recorded with the blob's provenance, once however often it is
        // named.
        door.fetch_blob(
            &[upstream.url("/b/list.tar.gz")],
            vec![
                q("checksum.sri", &sri256(&bytes)),
                q("bazel.canonical_id", "list-1"),
            ],
        )
        .await
        .expect("again, by its sha256");
        let info = door
            .server
            .get_json(&format!("/api/v1/blobs/{}", d.hash))
            .await;
        assert_eq!(
            info["canonical_ids"],
            serde_json::json!(["list-1"]),
            "{info}"
        );

        // No checksum matches: NOT_FOUND naming the mismatch, and nothing is stored.
        let e = door
            .fetch_blob(
                &[upstream.url("/b/wrong.tar.gz")],
                vec![q("checksum.sri", &sri256(&other))],
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert!(e.message().contains("do not match"), "{}", e.message());
        assert_eq!(door.missing(vec![digest_of(&other)]).await.len(), 1);
        let pin = door
            .server
            .get(&format!("/mirror/{}/b/wrong.tar.gz", upstream.host()))
            .await;
        // Not pinned: the first fetch through HTTP now stores the upstream's bytes.
        assert_eq!(pin.status(), 200);

        // Unknown qualifiers, no URIs, a URL the policy does not allow.
        let e = door
            .fetch_blob(
                &[upstream.url("/b/list.tar.gz")],
                vec![q("resource_type", "application/x-tar")],
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("`resource_type`"), "{}", e.message());
        let e = door.fetch_blob(&[], vec![]).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with("uris"), "{}", e.message());
        let e = door
            .fetch_blob(&["https://elsewhere.example/x.tar.gz".to_owned()], vec![])
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert!(e.message().contains("policy"), "{}", e.message());
        assert_eq!(
            upstream.total_requests(),
            // list: the sha256 try and the sha384 try; wrong: one; the HTTP GET: one.
            4,
            "the refused and the invalid requests reached no upstream"
        );

        // First-seen pinning: the upstream changes its bytes, the pin stays.
        let url = upstream.url("/b/pinned.tar.gz");
        let first = door
            .fetch_blob(std::slice::from_ref(&url), vec![])
            .await
            .expect("first");
        upstream.serve_bytes("/b/pinned.tar.gz", other.clone());
        let again = door
            .fetch_blob(std::slice::from_ref(&url), vec![])
            .await
            .expect("again");
        assert_eq!(first, again);
        assert!(door.read(&again, 0, 0).await.expect("read") == bytes);
        // A URI that fails, then one that serves: the first that gives the blob wins.
        let d = door
            .fetch_blob(
                &[upstream.url("/b/absent.tar.gz"), url.clone()],
                vec![q("checksum.sri", &sri256(&bytes))],
            )
            .await
            .expect("the second URI");
        assert_eq!(d, first);
        door.server.stop().await;

        // A repository-cache export marks the canonical id: Bazel finds the archive by it.
        let out = tempfile::tempdir().expect("tempdir");
        let cache = out.path().join("cache");
        let mut export = std::process::Command::new(env!("CARGO_BIN_EXE_gf-registry"));
        export
            .args(["mirror", "export", "--format", "repository-cache"])
            .arg(&cache)
            .arg("--all")
            .arg("--data")
            .arg(door._dir.path().join("data"))
            .arg("--mirror-policy")
            .arg(door._dir.path().join("policy"))
            .arg("--registry")
            .arg(example_registry());
        let (code, stdout, stderr) =
            tokio::task::block_in_place(|| output_within(&mut export, Duration::from_secs(60)));
        assert_eq!(code, 0, "{stdout}{stderr}");
        let marker = cache
            .join("content_addressable/sha256")
            .join(sha256_hex(&bytes))
            .join(format!("id-{}", sha256_hex(b"list-1")));
        assert!(marker.exists(), "missing {}", marker.display());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_writes_and_pushes_need_the_push_scope_and_must_hash_to_their_digest() {
    bounded(async {
        let upstream = Upstream::start().await;
        let door = Door::start(&upstream, "").await;
        let blob = b"pre-seeded by CI".to_vec();
        let d = digest_of(&blob);
        let write = |token: Option<&str>, data: Vec<u8>| {
            let resource = format!("uploads/u-1/blobs/{}/{}", d.hash, d.size_bytes);
            let messages = vec![WriteRequest {
                resource_name: resource,
                write_offset: 0,
                finish_write: true,
                data,
            }];
            let mut client = door.bytestream();
            let token = token.map(str::to_owned);
            async move {
                let stream = futures::stream::iter(messages);
                let request = match token {
                    Some(t) => with_token(stream, &t),
                    None => tonic::Request::new(stream),
                };
                client.write(request).await
            }
        };
        let e = write(None, blob.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        let e = write(Some(PUBLISHER), blob.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("push"), "{}", e.message());
        let e = write(Some(PUSHER), b"pre-seeded by XX".to_vec())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains("nothing was stored"),
            "{}",
            e.message()
        );
        assert_eq!(door.missing(vec![d.clone()]).await, vec![d.clone()]);

        let done = write(Some(PUSHER), blob.clone()).await.expect("write");
        assert_eq!(done.into_inner().committed_size, d.size_bytes);
        assert!(door.missing(vec![d.clone()]).await.is_empty());
        assert!(door.read(&d, 0, 0).await.expect("read back") == blob);

        // BatchUpdateBlobs: one good, one whose bytes do not hash to its digest.
        let good = b"batch one".to_vec();
        let bad_digest = digest_of(b"batch two");
        let batch = door
            .cas()
            .batch_update_blobs(with_token(
                BatchUpdateBlobsRequest {
                    requests: vec![
                        batch_update_blobs_request::Request {
                            digest: Some(digest_of(&good)),
                            data: good.clone(),
                            compressor: 0,
                        },
                        batch_update_blobs_request::Request {
                            digest: Some(bad_digest.clone()),
                            data: b"batch 2!!".to_vec(),
                            compressor: 0,
                        },
                    ],
                    ..BatchUpdateBlobsRequest::default()
                },
                PUSHER,
            ))
            .await
            .expect("BatchUpdateBlobs")
            .into_inner();
        let codes = codes(batch.responses.iter().map(|r| r.status.as_ref()));
        assert_eq!(codes, vec![Code::Ok as i32, Code::InvalidArgument as i32]);
        assert_eq!(
            door.missing(vec![digest_of(&good), bad_digest.clone()])
                .await,
            vec![bad_digest]
        );

        // Push.PushBlob binds a URL to the pushed blob, like a first-seen pin: the URL is then
        // served with no upstream fetch, over gRPC and HTTP.
        let url = upstream.url("/pushed/pre-seeded.tar.gz");
        let push = |uri: &str, digest: &Digest, qualifiers: Vec<Qualifier>, token: Option<&str>| {
            let message = PushBlobRequest {
                uris: vec![uri.to_owned()],
                qualifiers,
                blob_digest: Some(digest.clone()),
                ..PushBlobRequest::default()
            };
            let request = match token {
                Some(t) => with_token(message, t),
                None => tonic::Request::new(message),
            };
            let mut client = PushClient::new(door.channel.clone());
            async move { client.push_blob(request).await }
        };
        let e = push(&url, &d, vec![], None).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        let e = push(
            &url,
            &d,
            vec![q("checksum.sri", &sri256(b"other"))],
            Some(PUSHER),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        let e = push(&url, &digest_of(b"never stored"), vec![], Some(PUSHER))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        push(
            &url,
            &d,
            vec![q("checksum.sri", &sri256(&blob))],
            Some(PUSHER),
        )
        .await
        .expect("PushBlob");
        assert_eq!(
            door.fetch_blob(std::slice::from_ref(&url), vec![])
                .await
                .expect("FetchBlob of the pushed URL"),
            d
        );
        let (status, body) = door
            .server
            .get_bytes(&format!(
                "/mirror/{}/pushed/pre-seeded.tar.gz",
                upstream.host()
            ))
            .await;
        assert_eq!(status, 200);
        assert!(body == blob);
        assert_eq!(upstream.total_requests(), 0, "the upstream was never asked");
        let e = push(&url, &digest_of(&good), vec![], Some(PUSHER))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
        assert!(e.message().contains("already pinned"), "{}", e.message());

        // Not an action cache, and it says so; Capabilities tell Bazel the same.
        let mut ac = ActionCacheClient::new(door.channel.clone());
        let e = ac
            .get_action_result(GetActionResultRequest {
                action_digest: Some(d.clone()),
                ..GetActionResultRequest::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound);
        assert!(
            e.message().contains("not an action cache"),
            "{}",
            e.message()
        );
        let e = ac
            .update_action_result(UpdateActionResultRequest {
                action_digest: Some(d.clone()),
                action_result: Some(ActionResult::default()),
                ..UpdateActionResultRequest::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied);
        let caps = CapabilitiesClient::new(door.channel.clone())
            .get_capabilities(GetCapabilitiesRequest::default())
            .await
            .expect("GetCapabilities")
            .into_inner();
        let cache = caps.cache_capabilities.expect("cache capabilities");
        assert_eq!(cache.digest_functions, vec![1], "SHA256 only");
        assert!(
            !cache
                .action_cache_update_capabilities
                .expect("update capabilities")
                .update_enabled
        );
        assert!(caps.execution_capabilities.is_none());
        door.server.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_reads_need_a_token_when_http_reads_do() {
    bounded(async {
        let bytes = archive(4);
        let upstream =
            Upstream::start_with_files([("/c/locked.tar.gz".to_owned(), bytes.clone())]).await;
        let door = Door::start(&upstream, "[auth]\nrequire_token_for_reads = true\n").await;
        let request = || FetchBlobRequest {
            uris: vec![upstream.url("/c/locked.tar.gz")],
            ..FetchBlobRequest::default()
        };
        let e = door.fetch().fetch_blob(request()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        assert_eq!(upstream.total_requests(), 0);
        let ok = door
            .fetch()
            .fetch_blob(with_token(request(), PUBLISHER))
            .await
            .expect("with a token")
            .into_inner();
        assert_eq!(ok.blob_digest, Some(digest_of(&bytes)));
        door.server.stop().await;
    })
    .await;
}

/// grpcio (gRPC's C core, from PyPI) as a second, independent client: SRI lists, header
/// qualifiers, an unknown qualifier, `read_offset`/`read_limit`, and concurrent FetchBlob
/// calls of one URL (`tests/grpc_client/remote_asset.py`). Without grpcio the test says why
/// and passes, unless `CI` is set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_client_gets_the_same_answers() {
    let has_grpcio = std::process::Command::new("python3")
        .args(["-c", "import grpc, google.protobuf"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_grpcio {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 with grpcio and protobuf is needed (pip install grpcio protobuf)"
        );
        eprintln!("skipped: python3 has no grpcio");
        return;
    }
    let bytes = archive(5);
    let upstream = Upstream::start_with_files([("/py/a.tar.gz".to_owned(), bytes.clone())]).await;
    let door = Door::start(&upstream, "").await;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc_client/remote_asset.py");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(&script)
        .arg(door.server.addr().to_string())
        .arg(upstream.url("/py/a.tar.gz"))
        .arg(bytes.len().to_string())
        .arg(sri256(&bytes))
        .arg(sri384(&bytes))
        .arg(sri256(b"other bytes"))
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("grpc_proxy");
    // Blocking wait on this worker thread; the server runs on its own threads.
    let (code, stdout, stderr) =
        tokio::task::block_in_place(|| output_within(&mut cmd, TEST_TIMEOUT));
    assert_eq!(code, 0, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON from the client");
    let hash = sha256_hex(&bytes);
    let concurrent = v["concurrent"].as_array().expect("concurrent answers");
    assert_eq!(concurrent.len(), 8);
    for a in concurrent {
        assert_eq!(a["code"], "OK", "{a}");
        assert_eq!(a["status_set"], false, "no error status inside an OK: {a}");
        assert_eq!(a["hash"], hash.as_str());
        assert_eq!(a["size"], bytes.len());
    }
    assert_eq!(
        upstream.gets("/py/a.tar.gz"),
        1,
        "one upstream GET for 8 callers"
    );
    assert_eq!(v["sri_list"]["code"], "OK", "{}", v["sri_list"]);
    assert_eq!(
        v["sri_list"]["qualifiers"],
        serde_json::json!(["checksum.sri"]),
        "header qualifiers are never echoed"
    );
    assert_eq!(v["no_match"]["code"], "NOT_FOUND", "{}", v["no_match"]);
    assert_eq!(v["unknown_qualifier"]["code"], "INVALID_ARGUMENT");
    assert!(
        v["unknown_qualifier"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("`resource_type`")),
        "{}",
        v["unknown_qualifier"]
    );
    assert_eq!(v["read_middle"]["data"], hex::encode(&bytes[1000..1016]));
    assert_eq!(
        v["read_tail"]["data"],
        hex::encode(&bytes[bytes.len() - 5..])
    );
    assert_eq!(v["read_past_end"]["code"], "OUT_OF_RANGE");
    door.server.stop().await;
}

/// `server.grpc_listen` moves gRPC to a port of its own: the advice names it, gRPC answers
/// there, and the HTTP port answers HTTP only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_listen_gives_grpc_a_port_of_its_own() {
    bounded(async {
        let upstream = Upstream::start().await;
        let door = Door::start(&upstream, "[server]\ngrpc_listen = \"127.0.0.1:0\"\n").await;
        let target = door.server.running().app.grpc_target();
        let http_port = door.server.addr().port();
        let grpc_port: u16 = target
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("a port in {target}"));
        assert_ne!(grpc_port, http_port);
        let rc = door
            .server
            .get("/bazel/bazelrc")
            .await
            .text()
            .await
            .expect("bazelrc");
        assert!(
            rc.contains(&format!("--remote_cache=grpc://127.0.0.1:{grpc_port}\n")),
            "{rc}"
        );

        let channel = Channel::from_shared(format!("http://127.0.0.1:{grpc_port}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to the gRPC port");
        CapabilitiesClient::new(channel)
            .get_capabilities(GetCapabilitiesRequest::default())
            .await
            .expect("gRPC on its own port");
        let e = CapabilitiesClient::new(door.channel.clone())
            .get_capabilities(GetCapabilitiesRequest::default())
            .await
            .unwrap_err();
        assert_ne!(e.code(), Code::Ok, "no gRPC on the HTTP port: {e:?}");
        let (status, _) = door.server.get_bytes("/bazel_registry.json").await;
        assert_eq!(status, 200);
        door.server.stop().await;
    })
    .await;
}
