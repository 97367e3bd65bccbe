//! `hookrelay-agent`: the same agent as `hookrelay relay`, without the server.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "hookrelay-agent",
    version = hookrelay_telemetry::LONG_VERSION,
    about = "Relay a tenant's hookrelay events to a local target"
)]
struct Cli {
    #[command(flatten)]
    agent: hookrelay_agent::AgentArgs,
}

fn main() -> ExitCode {
    use clap::CommandFactory;
    let argv = match hookrelay_agent::with_config_file(
        std::env::args_os().collect(),
        1,
        &Cli::command(),
    ) {
        Ok(argv) => argv,
        Err(error) => {
            eprintln!("hookrelay-agent: {error}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    // The OTLP exporter runs on its own thread: set up before the runtime.
    let telemetry = match hookrelay_agent::init_logging(&cli.agent) {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("hookrelay-agent: cannot set up logging: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    // Deliveries wait on the network, not the CPU: one thread interleaves them
    // with no cross-thread wake-ups per event (docs/benchmarks.md).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let result = runtime.block_on(hookrelay_agent::run_until_signal(cli.agent));
    drop(runtime);
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hookrelay-agent: {error:#}");
            ExitCode::FAILURE
        }
    }
}
