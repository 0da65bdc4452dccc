//! `tillmesh-mdns-probe`: a test helper that runs `MdnsDiscovery` alone and prints
//! one JSON line per event on stdout, until SIGTERM / Ctrl-C or `--seconds` pass.
//!
//! ```text
//! tillmesh-mdns-probe --name N --id ID --port P --store S [--proto V]
//!                     [--interface IFACE]... [--seconds T]
//! ```
//! Lines: `{"event":"started","pid",…}`, `{"event":"found","device_id",…,"addresses":[…],
//! "port",…,"store_id",…}`, `{"event":"lost","device_id":…}`, `{"event":"stopped"}`.
//! Logs (`RUST_LOG`, e.g. `mdns_sd=debug`) go to stderr.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use tillmesh_discovery_mdns::{MdnsConfig, MdnsDiscovery};
use tillmesh_domain::ids::DeviceId;
use tillmesh_domain::ports::{Advertisement, Discovery, DiscoveryEvent, DiscoverySink};
use tokio::signal::unix::{signal, SignalKind};

const USAGE: &str = "usage: tillmesh-mdns-probe --name N --id ID --port P --store S \
                     [--proto V] [--interface IFACE]... [--seconds T]";

struct Args {
    ad: Advertisement,
    interfaces: Vec<String>,
    seconds: u64,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args> {
    let (mut name, mut id, mut port, mut store) = (None, None, None, None);
    let (mut proto, mut interfaces, mut seconds) = (1u32, Vec::new(), 60u64);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow!("{flag} needs a value"));
        match flag.as_str() {
            "--name" => name = Some(value()?),
            "--id" => id = Some(value()?),
            "--port" => port = Some(value()?.parse::<u16>().context("--port")?),
            "--store" => store = Some(value()?),
            "--proto" => proto = value()?.parse().context("--proto")?,
            "--interface" => interfaces.push(value()?),
            "--seconds" => seconds = value()?.parse().context("--seconds")?,
            "-h" | "--help" => bail!("{USAGE}"),
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let id = id.ok_or_else(|| anyhow!("--id is required\n{USAGE}"))?;
    Ok(Args {
        ad: Advertisement {
            device_id: DeviceId::parse(id).context("--id")?,
            name: name.unwrap_or_default(),
            port: port.ok_or_else(|| anyhow!("--port is required\n{USAGE}"))?,
            store_id: store.unwrap_or_default(),
            protocol: proto,
        },
        interfaces,
        seconds,
    })
}

fn print_line(v: &Value) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (the reader went away) is no reason to fail.
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

struct JsonLines;

impl DiscoverySink for JsonLines {
    fn on_event(&self, event: DiscoveryEvent) {
        let line = match event {
            DiscoveryEvent::Found { device_id, name, addresses, port, store_id, protocol } => json!({
                "event": "found",
                "device_id": device_id.as_str(),
                "name": name,
                "addresses": addresses,
                "port": port,
                "store_id": store_id,
                "protocol": protocol,
            }),
            DiscoveryEvent::Lost { device_id } => json!({
                "event": "lost",
                "device_id": device_id.as_str(),
            }),
        };
        print_line(&line);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = parse_args(std::env::args().skip(1))?;
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let discovery = MdnsDiscovery::new(MdnsConfig { interfaces: args.interfaces.clone() });
    discovery.start(args.ad.clone(), Arc::new(JsonLines)).await.context("starting mDNS discovery")?;
    print_line(&json!({
        "event": "started",
        "device_id": args.ad.device_id.as_str(),
        "pid": std::process::id(),
        "service": discovery.registered_name(),
        "interfaces": args.interfaces,
    }));
    let why = tokio::select! {
        _ = term.recv() => "sigterm",
        _ = tokio::signal::ctrl_c() => "sigint",
        () = tokio::time::sleep(Duration::from_secs(args.seconds)) => "timeout",
    };
    discovery.shutdown().await;
    print_line(&json!({ "event": "stopped", "reason": why }));
    Ok(())
}
