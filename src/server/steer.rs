//! Which worker gets a new connection: the one whose listener is tied to the CPU the
//! connection arrived on.
//!
//! The workers' listeners share a port (`SO_REUSEPORT`). Left alone, the kernel spreads new
//! connections over them by a hash of the addresses, so a client's connections land on every
//! worker whatever CPU the client runs on. With `SO_INCOMING_CPU` set on each listener to a
//! distinct CPU, the kernel (Linux 6.1 and later) hands a connection to the listener of the
//! CPU that processed its first packet, and hashes only when no listener matches. For a client
//! on the same host that is the client's own CPU: a request and its answer then stay on one
//! core instead of crossing between two. Measured on the registry hot path with wrk on the
//! same 2 cores (bench/RESULTS.md): p99 7.3-8.0 ms without, 1.9-4.3 ms with.
//!
//! The price: a client on this host that opens all its connections from one CPU gets them all
//! on one worker. wrk often does (its threads connect before the scheduler spreads them);
//! one worker then serves all 64 connections, at 107-118k requests/s here against 127-142k
//! when they are spread, p99 1.2-3.4 ms. Handing a worker's surplus connections to the least
//! busy worker was tried: it evens the load but brings the cross-core exchanges back (p99
//! 3.7-7.9 ms), so it is not done. Connections from other hosts arrive on the CPUs the network
//! card spreads them over.
//!
//! `server.pin_workers` goes one step further and keeps worker `i` on its CPU, so the worker
//! is always where its connections' packets are processed. That is for hosts whose cores the
//! server has to itself: a pinned worker cannot move away from a CPU other work is using.

use std::net::TcpListener;

/// Ties listener `i` to `cpus[i]`, and returns how many were tied. Nothing is tied when
/// there are more listeners than CPUs: a listener sharing a CPU with another would never be
/// chosen.
pub(super) fn by_cpu(listeners: &[TcpListener], cpus: &[usize]) -> usize {
    if listeners.len() > cpus.len() {
        return 0;
    }
    let mut tied = 0;
    for (listener, &cpu) in listeners.iter().zip(cpus) {
        let Ok(cpu) = u32::try_from(cpu) else { break };
        match rustix::net::sockopt::set_socket_incoming_cpu(listener, cpu) {
            Ok(()) => tied += 1,
            Err(e) => {
                tracing::debug!(cpu, error = %e, "SO_INCOMING_CPU not set; connections are spread by hash");
                break;
            }
        }
    }
    tied
}

/// Keeps the calling thread on `cpu` from now on.
pub(super) fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).map_err(std::io::Error::from)
}

/// The CPUs in this process's affinity mask, ascending.
pub(super) fn allowed_cpus() -> Vec<usize> {
    rustix::thread::sched_getaffinity(None).map_or_else(
        |_| Vec::new(),
        |set| {
            (0..rustix::thread::CpuSet::MAX_CPU)
                .filter(|&c| set.is_set(c))
                .collect()
        },
    )
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

    use super::*;

    fn listeners(n: usize) -> (std::net::SocketAddr, Vec<TcpListener>) {
        // Binding goes through tokio's socket type, which wants a reactor to register with.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime");
        let _in_rt = rt.enter();
        let first =
            super::super::bind_reuseport("127.0.0.1:0".parse().expect("addr")).expect("bind");
        let addr = first.local_addr().expect("local addr");
        let mut all = vec![first];
        for _ in 1..n {
            all.push(super::super::bind_reuseport(addr).expect("bind"));
        }
        (addr, all)
    }

    /// Accepts everything waiting on each listener; returns the counts.
    fn drain(listeners: &[TcpListener]) -> Vec<usize> {
        listeners
            .iter()
            .map(|l| std::iter::from_fn(|| l.accept().ok()).count())
            .collect()
    }

    #[test]
    #[allow(
        clippy::disallowed_methods,
        reason = "a client thread pinned to a CPU, not server work"
    )]
    fn connections_go_to_the_listener_of_the_clients_cpu() {
        let cpus = allowed_cpus();
        if cpus.len() < 2 {
            eprintln!("skipped: needs two CPUs, this process may run on {cpus:?}");
            return;
        }
        let (addr, all) = listeners(2);
        assert_eq!(by_cpu(&all, &cpus), 2);
        for (i, &cpu) in cpus.iter().take(2).enumerate() {
            // A client thread on one CPU: its connections' first packets are processed there.
            std::thread::spawn(move || {
                pin_current_thread(cpu).expect("pin the client");
                assert_eq!(allowed_cpus(), [cpu], "the thread runs on its CPU only");
                let held: Vec<TcpStream> = (0..16)
                    .map(|_| TcpStream::connect(addr).expect("connect"))
                    .collect();
                drop(held);
            })
            .join()
            .expect("client thread");
            let mut expected = vec![0; 2];
            expected[i] = 16;
            assert_eq!(drain(&all), expected, "clients on CPU {cpu}");
        }
    }

    #[test]
    fn more_listeners_than_cpus_stay_spread_by_hash() {
        let cpus = allowed_cpus();
        let (_, all) = listeners(cpus.len() + 1);
        assert_eq!(by_cpu(&all, &cpus), 0);
    }
}
