//! The gRPC door's load client, for `bench/grpc.sh` (not a test): against a running server,
//! it pins one archive through `FetchBlob`, then measures, in the same run and alternating
//! which goes first:
//!
//! - throughput of the pinned blob over `FetchBlob` + `ByteStream/Read` against `GET /cas/...`
//!   over HTTP/1.1 (the path a downloader-config rewrite takes), both verified server-side;
//! - latency of `--hits` `FetchBlob` hits at `--concurrency` streams on one connection (Bazel
//!   keeps one per server).
//!
//! Every figure printed is the median over `--runs`; one JSON line per run goes to stdout.
//!
//! ```sh
//! cargo run --release --example grpc_bench -- --server http://127.0.0.1:8080 \
//!     --uri http://127.0.0.1:9000/big.bin --sri sha256-... --runs 5
//! ```

use std::time::{Duration, Instant};

use bazel_remote_apis::build::bazel::remote::asset::v1::fetch_client::FetchClient;
use bazel_remote_apis::build::bazel::remote::asset::v1::{FetchBlobRequest, Qualifier};
use bazel_remote_apis::build::bazel::remote::execution::v2::Digest;
use bazel_remote_apis::google::bytestream::ReadRequest;
use bazel_remote_apis::google::bytestream::byte_stream_client::ByteStreamClient;
use clap::Parser;
use futures::StreamExt as _;
use tonic::transport::Channel;

#[derive(Debug, Parser)]
struct Args {
    /// The server's base URL (`http://host:port`); gRPC goes to the same port.
    #[arg(long)]
    server: String,
    /// The archive's upstream URL (the server's policy must allow it).
    #[arg(long)]
    uri: String,
    /// Its SRI (`sha256-...`).
    #[arg(long)]
    sri: String,
    /// Runs; the figures are medians over them.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// FetchBlob hits per latency run.
    #[arg(long, default_value_t = 1000)]
    hits: usize,
    /// Concurrent streams of a latency run.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// The client's HTTP/2 stream and connection windows, in MiB (default: hyper's).
    #[arg(long)]
    window_mib: Option<u32>,
}

fn request(args: &Args) -> FetchBlobRequest {
    FetchBlobRequest {
        uris: vec![args.uri.clone()],
        qualifiers: vec![Qualifier {
            name: "checksum.sri".to_owned(),
            value: args.sri.clone(),
        }],
        ..FetchBlobRequest::default()
    }
}

async fn fetch(client: &mut FetchClient<Channel>, args: &Args) -> anyhow::Result<Digest> {
    let response = client.fetch_blob(request(args)).await?.into_inner();
    response
        .blob_digest
        .ok_or_else(|| anyhow::anyhow!("FetchBlob named no blob"))
}

/// FetchBlob then ByteStream/Read of the whole blob; bytes received.
async fn grpc_transfer(channel: &Channel, args: &Args) -> anyhow::Result<u64> {
    let digest = fetch(&mut FetchClient::new(channel.clone()), args).await?;
    let mut stream = ByteStreamClient::new(channel.clone())
        .read(ReadRequest {
            resource_name: format!("blobs/{}/{}", digest.hash, digest.size_bytes),
            read_offset: 0,
            read_limit: 0,
        })
        .await?
        .into_inner();
    let mut n = 0u64;
    while let Some(msg) = stream.message().await? {
        n += msg.data.len() as u64;
    }
    anyhow::ensure!(n == digest.size_bytes as u64, "short read: {n}");
    Ok(n)
}

/// GET /cas/sha256/{hex}; bytes received.
async fn http_transfer(client: &reqwest::Client, args: &Args, hex: &str) -> anyhow::Result<u64> {
    let response = client
        .get(format!("{}/cas/sha256/{hex}", args.server))
        .send()
        .await?
        .error_for_status()?;
    let mut body = response.bytes_stream();
    let mut n = 0u64;
    while let Some(chunk) = body.next().await {
        n += chunk?.len() as u64;
    }
    Ok(n)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let channel = Channel::from_shared(args.server.clone())?.connect().await?;
    let http = reqwest::Client::builder().http1_only().build()?;

    let cold = Instant::now();
    let digest = fetch(&mut FetchClient::new(channel.clone()), &args).await?;
    eprintln!(
        "pinned {} ({} bytes) in {:.2} s",
        digest.hash,
        digest.size_bytes,
        cold.elapsed().as_secs_f64()
    );

    let (mut grpc_mbs, mut http_mbs, mut p50s, mut p99s) = (vec![], vec![], vec![], vec![]);
    for run in 0..args.runs {
        let mut timed = [0.0f64; 2];
        let order: [usize; 2] = if run % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let start = Instant::now();
            let n = if which == 0 {
                grpc_transfer(&channel, &args).await?
            } else {
                http_transfer(&http, &args, &digest.hash).await?
            };
            timed[which] = n as f64 / 1e6 / start.elapsed().as_secs_f64();
        }
        grpc_mbs.push(timed[0]);
        http_mbs.push(timed[1]);

        let started = Instant::now();
        let mut latencies: Vec<Duration> = futures::stream::iter(0..args.hits)
            .map(|_| {
                let mut client = FetchClient::new(channel.clone());
                let req = request(&args);
                async move {
                    let t = Instant::now();
                    client.fetch_blob(req).await.map(|_| t.elapsed())
                }
            })
            .buffer_unordered(args.concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let wall = started.elapsed();
        latencies.sort();
        let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
        p50s.push(p50.as_secs_f64() * 1e3);
        p99s.push(p99.as_secs_f64() * 1e3);
        println!(
            "{{\"run\":{run},\"grpc_mb_s\":{:.1},\"http_mb_s\":{:.1},\"fetchblob_p50_ms\":{:.3},\"fetchblob_p99_ms\":{:.3},\"fetchblob_per_s\":{:.0}}}",
            timed[0],
            timed[1],
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            args.hits as f64 / wall.as_secs_f64()
        );
    }
    let (g, h) = (median(grpc_mbs), median(http_mbs));
    eprintln!(
        "medians of {} runs: gRPC {g:.0} MB/s, HTTP /cas {h:.0} MB/s, ratio {:.2}; \
         {} FetchBlob hits at {} streams: p50 {:.2} ms, p99 {:.2} ms",
        args.runs,
        g / h,
        args.hits,
        args.concurrency,
        median(p50s),
        median(p99s)
    );
    Ok(())
}
