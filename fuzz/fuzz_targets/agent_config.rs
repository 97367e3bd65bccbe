//! The agent's `--config` file: any text is either refused with a message or
//! turned into flags that clap then parses (or refuses); nothing panics.
#![no_main]

use clap::{CommandFactory, Parser};

#[derive(Parser)]
#[command(name = "hookrelay-agent")]
struct Cli {
    #[command(flatten)]
    agent: hookrelay_agent::AgentArgs,
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let command = Cli::command();
    if let Ok(flags) = hookrelay_agent::config_flags(text, "fuzz.toml", &[], &command) {
        let argv = std::iter::once("hookrelay-agent".into()).chain(flags);
        let _ = Cli::try_parse_from(argv);
    }
});
