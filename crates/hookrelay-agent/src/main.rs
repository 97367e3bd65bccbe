//! `hookrelay-agent`: the same agent as `hookrelay relay`, without the server.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "hookrelay-agent",
    version = hookrelay_telemetry::LONG_VERSION,
    about = "Relay a tenant's hookrelay events to a local target",
    after_help = "Commands (each with --help):\n  \
        hookrelay-agent login --server URL   get this device its own credentials, approved in the console\n  \
        hookrelay-agent status               who this device is logged in as, and whether the server agrees\n  \
        hookrelay-agent logout               revoke the stored login and forget it"
)]
struct Cli {
    #[command(flatten)]
    agent: hookrelay_agent::AgentArgs,
}

/// `hookrelay-agent login|logout|status`: parsed apart from the agent's own
/// flags, which they do not take.
#[derive(Parser)]
#[command(name = "hookrelay-agent", version = hookrelay_telemetry::LONG_VERSION)]
struct AccountCli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Get this device its own credentials: a person approves a code in the
    /// console, and the login is stored in ~/.config/hookrelay/credentials.toml.
    Login(hookrelay_agent::LoginArgs),
    /// Revoke the stored login and forget it.
    Logout(hookrelay_agent::ServerArg),
    /// Who this device is logged in as, and whether the server agrees.
    Status(hookrelay_agent::ServerArg),
}

/// login, logout and status: one request or a short wait, no logging set up.
fn account(command: Command) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let http = match reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            eprintln!("hookrelay-agent: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Login(args) => hookrelay_agent::login(args, http).await,
            Command::Logout(args) => hookrelay_agent::logout(args, http).await,
            Command::Status(args) => hookrelay_agent::status(args, http).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hookrelay-agent: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    use clap::CommandFactory;
    let first = std::env::args_os().nth(1);
    if first
        .as_ref()
        .and_then(|a| a.to_str())
        .is_some_and(|a| matches!(a, "login" | "logout" | "status"))
    {
        return account(AccountCli::parse().command);
    }
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
