//! `marketsync sim`: serves the bundled simulators on their own.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use tracing::info;

use super::runtime;

/// The arguments of `marketsync sim`.
pub(super) struct SimArgs {
    pub(super) listen: SocketAddr,
    pub(super) seed: u64,
    pub(super) latency: humantime::Duration,
    pub(super) profile: crate::sim::SimProfile,
    pub(super) time_scale: f64,
    pub(super) asins: u32,
    pub(super) unlimited: bool,
    pub(super) faults: Option<PathBuf>,
}

pub(super) fn command(args: SimArgs) -> anyhow::Result<i32> {
    let SimArgs {
        listen,
        seed,
        latency,
        profile,
        time_scale,
        asins,
        unlimited,
        faults,
    } = args;
    if !(crate::sim::TIME_SCALE_MIN..=crate::sim::TIME_SCALE_MAX).contains(&time_scale) {
        anyhow::bail!(
            "--time-scale: {time_scale} is out of range; use {} to {} (60 = one simulated minute per second)",
            crate::sim::TIME_SCALE_MIN,
            crate::sim::TIME_SCALE_MAX
        );
    }
    let faults = match &faults {
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
        profile,
        time_scale,
        asins_per_marketplace: asins,
        faults,
        ..crate::sim::SimConfig::default()
    };
    if unlimited {
        for operation in crate::sim::SimConfig::RATE_LIMITED {
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
        info!(
            address = %listener.local_addr()?,
            profile = %profile,
            time_scale,
            "simulator listening"
        );
        let sim = crate::sim::Simulator::new(config);
        crate::sim::serve(listener, sim, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
        anyhow::Ok(())
    })?;
    Ok(0)
}
