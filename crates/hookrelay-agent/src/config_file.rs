//! `--config agent.toml`: every flag of the agent in a TOML file, under its
//! long name (`client-id` or `client_id`). Precedence, highest first: the
//! command line, the environment, the file, the defaults.
//!
//! The file is turned into flags before clap parses: a key becomes `--key
//! value` (a list, one flag per item; `true` a bare flag; `verbose = 2` the
//! flag twice) unless the command
//! line already has that flag or its environment variable is set.

use std::ffi::OsString;

/// Returns `argv` with the config file's settings inserted at `insert_at` (just
/// after the program, or after `relay`). Err: one line naming what is wrong.
pub fn with_config_file(
    argv: Vec<OsString>,
    insert_at: usize,
    command: &clap::Command,
) -> Result<Vec<OsString>, String> {
    let given: Vec<String> = argv
        .iter()
        .skip(insert_at)
        .filter_map(|a| a.to_str().map(str::to_owned))
        .collect();
    let path = given
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| given.get(i + 1).cloned())
        .or_else(|| {
            given
                .iter()
                .find_map(|a| a.strip_prefix("--config=").map(str::to_owned))
        })
        .or_else(|| std::env::var("HOOKRELAY_CONFIG").ok());
    let Some(path) = path else {
        return Ok(argv);
    };
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read --config {path}: {e}"))?;
    let inserted = flags(&text, &path, &given, command)?;
    let mut argv = argv;
    let at = insert_at.min(argv.len());
    argv.splice(at..at, inserted);
    Ok(argv)
}

/// The flags a config file's `text` (read from `path`) stands for, leaving out
/// those `given` on the command line or set in the environment.
pub fn flags(
    text: &str,
    path: &str,
    given: &[String],
    command: &clap::Command,
) -> Result<Vec<OsString>, String> {
    let table: toml::Table =
        toml::from_str(text).map_err(|e| format!("--config {path} is not valid TOML: {e}"))?;
    let mut inserted: Vec<OsString> = Vec::new();
    for (key, value) in table {
        let long = key.replace('_', "-");
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && long != "config")
            .ok_or_else(|| {
                format!("--config {path}: unknown setting `{key}` (see --help for the flags)")
            })?;
        let on_command_line = given
            .iter()
            .any(|a| *a == format!("--{long}") || a.starts_with(&format!("--{long}=")));
        let in_environment = arg
            .get_env()
            .is_some_and(|env| std::env::var_os(env).is_some());
        if on_command_line || in_environment {
            continue;
        }
        let flag = OsString::from(format!("--{long}"));
        let scalar = |value: &toml::Value| -> Result<String, String> {
            match value {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(n) => Ok(n.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                toml::Value::Boolean(b) => Ok(b.to_string()),
                _ => Err(format!(
                    "--config {path}: `{key}` must be a string, number, boolean or list of them"
                )),
            }
        };
        match value {
            toml::Value::Array(items) => {
                for item in &items {
                    inserted.push(flag.clone());
                    inserted.push(scalar(item)?.into());
                }
            }
            // verbose = 2 is -vv.
            toml::Value::Integer(n) if matches!(arg.get_action(), clap::ArgAction::Count) => {
                for _ in 0..n.clamp(0, 8) {
                    inserted.push(flag.clone());
                }
            }
            toml::Value::Boolean(true) if !arg.get_action().takes_values() => inserted.push(flag),
            toml::Value::Boolean(false) if !arg.get_action().takes_values() => {}
            other => {
                inserted.push(flag);
                inserted.push(scalar(&other)?.into());
            }
        }
    }
    Ok(inserted)
}

#[cfg(test)]
mod tests {
    use super::with_config_file;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: crate::AgentArgs,
    }

    #[test]
    fn counts_and_choices_from_the_file_parse_like_flags() {
        let dir = std::env::temp_dir().join(format!("agent-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("agent.toml");
        std::fs::write(
            &path,
            "server = \"https://relay.example.com\"\nclient_id = \"hrc_1\"\nclient_secret = \"s\"\n\
             consumer = \"ci\"\ntarget = \"http://127.0.0.1:9000/hook\"\nverbose = 2\n\
             log_format = \"json\"\nsend_traceparent = true\n",
        )
        .unwrap();
        let argv = ["hookrelay-agent", "--config", path.to_str().unwrap()]
            .map(std::ffi::OsString::from)
            .to_vec();
        let argv = with_config_file(argv, 1, &Cli::command()).unwrap();
        let cli = Cli::try_parse_from(argv).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(cli.agent.verbose, 2);
        assert_eq!(cli.agent.log_format, crate::LogFormat::Json);
        assert!(cli.agent.send_traceparent);
    }
}
