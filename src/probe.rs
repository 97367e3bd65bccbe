//! `hookrelay probe`: checks a running relay's HTTP readiness and gRPC health,
//! for `helm test` and scripts (the distroless image has no curl).

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// The readiness URL, e.g. http://hookrelay:8080/readyz.
    #[arg(long)]
    pub http: url::Url,
    /// The gRPC base URL, e.g. http://hookrelay:8080.
    #[arg(long)]
    pub grpc: url::Url,
}

pub async fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?
        .get(args.http.clone())
        .send()
        .await
        .with_context(|| format!("GET {}", args.http))?;
    if !response.status().is_success() {
        bail!("GET {} answered {}", args.http, response.status());
    }
    let channel = tonic::transport::Endpoint::from_shared(args.grpc.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {}", args.grpc))?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "hookrelay.v1.EventService".into(),
        })
        .await?
        .into_inner()
        .status();
    if status != ServingStatus::Serving {
        bail!("gRPC health of hookrelay.v1.EventService is {status:?}");
    }
    println!("ready: {} answered 2xx, gRPC health SERVING", args.http);
    Ok(())
}
