//! `marketsync sim`: serves the bundled simulators on their own.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use tracing::info;

use super::runtime;

pub(super) fn command(
    listen: SocketAddr,
    seed: u64,
    latency: humantime::Duration,
    asins: u32,
    unlimited: bool,
    faults: &Option<PathBuf>,
) -> anyhow::Result<i32> {
    let faults = match faults {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read the faults file", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{}: invalid faults", path.display()))?
        }
        None => crate::sim::SimFaults::default(),
    };
    let mut config = crate::sim::SimConfig {
        seed,
        processing_latency: latency.into(),
        asins_per_marketplace: asins,
        faults,
        ..crate::sim::SimConfig::default()
    };
    if unlimited {
        for operation in ["createReport", "getReport", "getReportDocument"] {
            config.rates.insert(
                operation.to_string(),
                crate::sim::RateSpec {
                    rate: 1e9,
                    burst: 1e9,
                },
            );
        }
    }
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("--listen: cannot listen on {listen}"))?;
        info!(address = %listener.local_addr()?, "simulator listening");
        let sim = crate::sim::Simulator::new(config);
        crate::sim::serve(listener, sim, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        anyhow::Ok(())
    })?;
    Ok(0)
}
