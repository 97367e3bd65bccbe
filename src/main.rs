//! The `hookrelay` binary: parses the command line, sets up telemetry, runs a
//! subcommand from the library.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use hookrelay::config::{Cli, Command, Config, DatabaseConfig};
use hookrelay::startup::{self, Application};
use hookrelay::telemetry;

/// jemalloc rather than glibc's malloc where the images run (x86-64 Linux).
/// Every webhook allocates its body, headers and batch on one worker thread
/// and frees them on another; glibc's arenas spent about an eighth of the
/// relay's CPU on that. With jemalloc, CPU per webhook at 128 concurrent went
/// from 44–50 to 37–43 µs (at 32, within the machine's noise) for 6 MB more
/// resident memory; mimalloc saved as much and held 25–65 MB more
/// (docs/benchmarks.md, issue 33).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

enum Run {
    Serve(Box<Config>),
    Migrate(DatabaseConfig),
    Relay(Box<hookrelay::agent::AgentArgs>),
    Probe(hookrelay::probe::ProbeArgs),
    Keys(hookrelay::config::KeysCommand),
    Tenants(hookrelay::config::TenantsCommand),
    Secrets(hookrelay::config::SecretsCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse_or_exit();
    let run = match cli.command {
        Command::Serve(args) => args
            .into_config()
            .map(|config| Run::Serve(Box::new(config))),
        Command::Migrate(args) => args.into_config().map(Run::Migrate),
        Command::Relay(args) => Ok(Run::Relay(args)),
        Command::Probe(args) => Ok(Run::Probe(args)),
        Command::Keys(command) => Ok(Run::Keys(command)),
        Command::Tenants(command) => Ok(Run::Tenants(command)),
        Command::Secrets(command) => Ok(Run::Secrets(command)),
    };
    let run = match run {
        Ok(run) => run,
        Err(invalid) => {
            eprintln!("hookrelay: {invalid}");
            return ExitCode::from(2);
        }
    };
    // The OTLP exporter runs on its own thread with a blocking HTTP client, so it
    // is set up before the async runtime exists.
    // `hookrelay relay` logs as `hookrelay-agent` does (--log-format, -q, -v).
    let telemetry = match &run {
        Run::Relay(args) => hookrelay::agent::init_logging(args),
        _ => telemetry::init(),
    };
    let telemetry = match telemetry {
        Ok(guard) => guard,
        Err(error) => {
            eprintln!("hookrelay: cannot set up telemetry: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    // The relay agent waits on the network, not the CPU: one thread interleaves
    // its deliveries with no cross-thread wake-ups per event (measured in
    // docs/benchmarks.md). The server uses every core.
    let mut runtime = if matches!(
        run,
        Run::Relay(_) | Run::Probe(_) | Run::Keys(_) | Run::Tenants(_) | Run::Secrets(_)
    ) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = runtime
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let result = runtime.block_on(async move {
        match run {
            Run::Serve(config) => {
                let app = Application::build(*config).await?;
                app.run_until_stopped(startup::shutdown_signal()).await
            }
            Run::Migrate(config) => hookrelay::database::migrate_only(config).await,
            Run::Probe(args) => hookrelay::probe::run(args).await,
            Run::Relay(args) => hookrelay::agent::run_until_signal(*args).await,
            Run::Keys(command) => hookrelay::admin::keys(command).await,
            Run::Tenants(command) => hookrelay::admin::tenants(command).await,
            Run::Secrets(command) => hookrelay::admin::secrets(command).await,
        }
    });
    drop(runtime);
    telemetry.shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Once, on stderr, with the cause chain ("cannot open X: Read-only file system").
        Err(error) => {
            eprintln!("hookrelay: {error:#}");
            ExitCode::FAILURE
        }
    }
}
