//! `braid sample-api`: serves the bundled sample API (token, profile, permissions).

use super::Exit;
use anyhow::{Context, Result};
use braid::sample_api::{self, Latencies};
use clap::Args;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub struct SampleApiArgs {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Latency of every endpoint in ms (overrides the seed-like defaults).
    #[arg(long)]
    latency_ms: Option<u64>,
    #[arg(long)]
    auth_latency_ms: Option<u64>,
    #[arg(long)]
    profile_latency_ms: Option<u64>,
    #[arg(long)]
    permissions_latency_ms: Option<u64>,
    /// Write the bound address (`127.0.0.1:PORT`) to this file once listening.
    #[arg(long)]
    addr_file: Option<PathBuf>,
    /// Inject a fault: `ENDPOINT:key=value,...`, e.g. `profile:status=503,every=2`,
    /// `permissions:delay_ms=2000,probability=0.1`, `token:drop` (repeatable).
    #[arg(long = "fault", value_parser = sample_api::FaultRule::parse)]
    faults: Vec<sample_api::FaultRule>,
}

pub async fn exec(args: SampleApiArgs) -> Result<u8, Exit> {
    let SampleApiArgs {
        listen,
        latency_ms,
        auth_latency_ms,
        profile_latency_ms,
        permissions_latency_ms,
        addr_file,
        faults,
    } = args;
    let d = Latencies::default();
    let pick = |specific: Option<u64>, default: Duration| {
        specific
            .or(latency_ms)
            .map_or(default, Duration::from_millis)
    };
    let latencies = Latencies {
        auth: pick(auth_latency_ms, d.auth),
        profile: pick(profile_latency_ms, d.profile),
        permissions: pick(permissions_latency_ms, d.permissions),
    };
    serve_sample_api(listen, latencies, faults, addr_file)
        .await
        .map_err(|e| Exit(1, e))
}

async fn serve_sample_api(
    listen: SocketAddr,
    latencies: Latencies,
    faults: Vec<sample_api::FaultRule>,
    addr_file: Option<PathBuf>,
) -> Result<u8> {
    let (addr, server, _log) = sample_api::bind(listen, latencies, faults)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    if let Some(file) = &addr_file {
        // A reader never sees a half-written address.
        super::write_atomically(file, addr.to_string().as_bytes())?;
    }
    println!("sample API listening on http://{addr}");
    std::io::stdout().flush()?;
    tokio::select! {
        r = server => r.context("sample API server")?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(0)
}
