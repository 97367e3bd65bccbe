#![forbid(unsafe_code)]

use std::process::ExitCode;

use hookrelay::config::{Cli, Command};
use hookrelay::startup::{self, Application};
use hookrelay::telemetry;

fn main() -> ExitCode {
    let cli = Cli::parse_or_exit();
    // The OTLP exporter runs on its own thread with a blocking HTTP client, so it
    // is set up before the async runtime exists.
    let telemetry = match telemetry::init() {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("hookrelay: cannot set up telemetry: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => {
                let config = args.into_config()?;
                let app = Application::build(config).await?;
                app.run_until_stopped(startup::shutdown_signal()).await
            }
            Command::Migrate(args) => startup::migrate_only(args.into_config()?).await,
        }
    });
    drop(runtime);
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(
                error = format!("{error:#}"),
                "hookrelay stopped with an error"
            );
            eprintln!("hookrelay: {error:#}");
            ExitCode::FAILURE
        }
    }
}
