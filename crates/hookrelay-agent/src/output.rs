//! What the agent prints. Every line is a `tracing` event with structured
//! fields; `--log-format` picks how it is written:
//!
//! - `json` (and `auto` when standard output is not a terminal): one JSON
//!   object per line, for log pipelines.
//! - `text` (and `auto` on a terminal): one short line per delivery, coloured
//!   by outcome (unless NO_COLOR is set or the output is not a terminal), e.g.
//!   `12:01:03  push  acme/app  main  → 200  5 ms`, and a line per change of
//!   state: connected, caught up, behind, reconnecting.
//!
//! `-q` shows warnings and errors only (`-qq` errors only); `-v` adds the
//! agent's debug lines (`-vv` everything's, `-vvv` traces). RUST_LOG, when
//! set, wins over both.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use anstyle::{AnsiColor, Style};
use hookrelay_telemetry::TelemetryGuard;
use tokio_util::sync::CancellationToken;
use tracing::field::{Field, Visit};
use tracing::{Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::AgentArgs;
use crate::metrics::AgentMetrics;

/// The messages the text format renders specially; the JSON format carries
/// them as `message`.
pub(crate) mod message {
    pub const CONNECTED: &str = "connected";
    pub const DELIVERED: &str = "delivered";
    pub const RETRYING: &str = "delivery failed; retrying";
    pub const FAILED: &str = "delivery failed for good; recorded as failed";
    pub const CAUGHT_UP: &str = "caught up";
    pub const BEHIND: &str = "behind";
    pub const SUMMARY: &str = "relay summary";
}

/// Installs logging (and OTLP traces when configured) for the agent. Call once,
/// before the async runtime starts.
pub fn init_logging(args: &AgentArgs) -> anyhow::Result<TelemetryGuard> {
    let filter = match (args.quiet, args.verbose) {
        (0, 0) => "info",
        (1, _) => "warn",
        (_, 0) => "error",
        (_, 1) => "info,hookrelay_agent=debug",
        (_, 2) => "debug",
        _ => "trace",
    };
    let logs = if args.log_format.is_text() {
        let color = std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        tracing_subscriber::fmt::layer()
            .event_format(Text { color })
            .boxed()
    } else {
        hookrelay_telemetry::json_logs(std::io::stdout)
    };
    hookrelay_telemetry::init("hookrelay-agent", filter, logs)
}

/// Lines for a person: local time to the second, then what happened.
struct Text {
    color: bool,
}

const GREEN: Style = AnsiColor::Green.on_default();
const YELLOW: Style = AnsiColor::Yellow.on_default();
const RED: Style = AnsiColor::Red.on_default().bold();
const DIM: Style = Style::new().dimmed();
const BOLD: Style = Style::new().bold();

impl Text {
    fn paint(&self, out: &mut String, style: Style, text: &str) {
        if self.color {
            let _ = write!(out, "{}{text}{}", style.render(), style.render_reset());
        } else {
            out.push_str(text);
        }
    }
}

impl<S, N> FormatEvent<S, N> for Text
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut line = String::new();
        self.paint(
            &mut line,
            DIM,
            &chrono::Local::now().format("%H:%M:%S").to_string(),
        );
        line.push_str("  ");
        let level = *event.metadata().level();
        match fields.message.as_str() {
            message::DELIVERED => {
                fields.delivery(&mut line);
                self.paint(&mut line, GREEN, &format!("→ {}", fields.get("status")));
                let _ = write!(line, "  {} ms", fields.millis("elapsed_ms"));
                fields.attempts_note(&mut line);
            }
            message::RETRYING => {
                fields.delivery(&mut line);
                let delay = Duration::from_millis(fields.get("delay_ms").parse().unwrap_or(0));
                self.paint(
                    &mut line,
                    YELLOW,
                    &format!(
                        "↻ {}; try {} in {}",
                        fields.why(),
                        fields.get("attempt").parse::<u32>().unwrap_or(0) + 1,
                        short_duration(delay)
                    ),
                );
            }
            message::FAILED => {
                fields.delivery(&mut line);
                self.paint(
                    &mut line,
                    RED,
                    &format!("✗ {}; recorded as failed", fields.why()),
                );
                fields.attempts_note(&mut line);
            }
            message::CONNECTED => self.paint(
                &mut line,
                BOLD,
                &format!(
                    "connected to {} as {}",
                    fields.get("server"),
                    fields.get("consumer")
                ),
            ),
            message::CAUGHT_UP => self.paint(&mut line, BOLD, "caught up"),
            message::BEHIND => self.paint(
                &mut line,
                YELLOW,
                &format!(
                    "{} pending, the oldest for {}",
                    fields.get("pending"),
                    short_duration(Duration::from_millis(
                        fields.get("lag_ms").parse().unwrap_or(0)
                    ))
                ),
            ),
            message::SUMMARY => {
                let _ = write!(
                    line,
                    "{} delivered, {} retried, {} failed, {} pending, lag {}",
                    fields.get("delivered"),
                    fields.get("retried"),
                    fields.get("failed"),
                    fields.get("pending"),
                    short_duration(Duration::from_millis(
                        fields.get("lag_ms").parse().unwrap_or(0)
                    ))
                );
            }
            message => {
                let style = match level {
                    Level::ERROR => RED,
                    Level::WARN => YELLOW,
                    _ => Style::new(),
                };
                let mut text = message.to_owned();
                // "retrying" lines: say why and when.
                if let Some(delay) = fields.take("delay_ms") {
                    let delay = Duration::from_millis(delay.parse().unwrap_or(0));
                    let _ = write!(text, " in {}", short_duration(delay));
                }
                if let Some(reason) = fields.take("reason") {
                    let _ = write!(text, ": {reason}");
                }
                self.paint(&mut line, style, &text);
                for (name, value) in &fields.rest {
                    line.push(' ');
                    // Durations read alike everywhere: `lag 37.8 s`, not `lag_ms=37779`.
                    let shown = match (name.strip_suffix("_ms"), value.parse::<u64>()) {
                        (Some(name), Ok(ms)) => {
                            format!("{name}={}", short_duration(Duration::from_millis(ms)))
                        }
                        _ => format!("{name}={value}"),
                    };
                    self.paint(&mut line, DIM, &shown);
                }
            }
        }
        writeln!(writer, "{line}")
    }
}

/// 5 ms, 1.6 s, 2 min 5 s, 3 h 20 min.
fn short_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", duration.as_secs_f64()),
        60_000..3_600_000 => format!("{} min {} s", ms / 60_000, ms / 1_000 % 60),
        _ => format!("{} h {} min", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// An event's fields as text, in the order they were recorded.
#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<(&'static str, String)>,
}

impl Fields {
    fn get(&self, name: &str) -> &str {
        self.rest
            .iter()
            .find(|(n, _)| *n == name)
            .map_or("", |(_, v)| v.as_str())
    }

    fn take(&mut self, name: &str) -> Option<String> {
        let index = self.rest.iter().position(|(n, _)| *n == name)?;
        Some(self.rest.remove(index).1)
    }

    /// The reason, short: `503 Service Unavailable`, not "the target answered …".
    fn why(&self) -> &str {
        let reason = self.get("reason");
        reason
            .strip_prefix("the target answered ")
            .unwrap_or(reason)
    }

    fn millis(&self, name: &str) -> String {
        let ms: f64 = self.get(name).parse().unwrap_or(0.0);
        if ms < 10.0 {
            format!("{ms:.1}")
        } else {
            format!("{ms:.0}")
        }
    }

    /// `push  acme/app  main  ` (the branch, `tag v1.2`, or nothing).
    fn delivery(&self, line: &mut String) {
        let git_ref = match (self.get("branch"), self.get("tag")) {
            ("", "") => String::new(),
            (branch, "") => branch.to_owned(),
            (_, tag) => format!("tag {tag}"),
        };
        let _ = write!(
            line,
            "{:<13} {:<20} {:<12} ",
            self.get("event_type"),
            self.get("repository"),
            git_ref
        );
        if self.get("redelivery") == "true" {
            line.push_str("(redelivery) ");
        }
    }

    fn attempts_note(&self, line: &mut String) {
        let attempts: u32 = self.get("attempts").parse().unwrap_or(1);
        if attempts > 1 {
            let _ = write!(line, "  after {attempts} attempts");
        }
    }
}

/// `value` with its control characters escaped (`\u{1b}`, `\r`): a branch
/// name or a target's answer is someone else's text, and must not move the
/// cursor, clear the screen or rewrite the line on a person's terminal.
fn printable(value: &str) -> String {
    if !value.chars().any(char::is_control) {
        return value.to_owned();
    }
    value
        .chars()
        .fold(String::with_capacity(value.len() + 8), |mut text, c| {
            if c.is_control() {
                text.extend(c.escape_debug());
            } else {
                text.push(c);
            }
            text
        })
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = printable(value);
        } else {
            self.rest.push((field.name(), printable(value)));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        } else {
            self.rest.push((field.name(), format!("{value:?}")));
        }
    }
}

/// Says when the agent has caught up, and when events have waited a while:
/// checked every `every`, printed only when the state changes (or, while
/// behind, at most once per `repeat`).
///
/// The stream has no end-of-backlog marker: the agent is caught up when
/// nothing it received is undelivered and the stream has brought nothing for
/// `every` (a backlog arrives back to back).
pub(crate) async fn report_state(
    metrics: Arc<AgentMetrics>,
    every: Duration,
    behind_after: Duration,
    repeat: Duration,
    stop: CancellationToken,
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut caught_up = false;
    let mut behind_since_report: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        if metrics.connected.get() == 0 {
            caught_up = false;
            behind_since_report = None;
            continue;
        }
        let (pending, lag) = metrics.pending();
        if pending == 0 {
            if !caught_up && metrics.idle_for() >= every {
                tracing::info!(message = message::CAUGHT_UP);
                caught_up = true;
                behind_since_report = None;
            }
        } else if lag >= behind_after && behind_since_report.is_none_or(|at| at.elapsed() >= repeat)
        {
            tracing::info!(
                pending,
                lag_ms = lag.as_millis() as u64,
                message = message::BEHIND
            );
            caught_up = false;
            behind_since_report = Some(tokio::time::Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{printable, short_duration};
    use std::time::Duration;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(printable("release/ü-1"), "release/ü-1");
        assert_eq!(printable("evil\u{1b}[2J\rX\ty"), "evil\\u{1b}[2J\\rX\\ty");
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(short_duration(Duration::from_millis(5)), "5 ms");
        assert_eq!(short_duration(Duration::from_millis(1_600)), "1.6 s");
        assert_eq!(short_duration(Duration::from_secs(125)), "2 min 5 s");
        assert_eq!(short_duration(Duration::from_secs(12_000)), "3 h 20 min");
    }
}
