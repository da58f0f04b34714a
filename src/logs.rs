//! Logs: `tracing` to stderr, as text or as one JSON object a line
//! (`ordo run --log-format json`), with the node's name on every line and
//! the service on every line its groups log (their actors work inside a
//! `group{service=...}` span).

use std::fmt;
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per line, for a log pipeline.
    Json,
}

/// Puts `node` first on every line the inner format writes.
struct WithNode<F> {
    node: String,
    json: bool,
    inner: F,
}

impl<S, N, F> FormatEvent<S, N> for WithNode<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match (self.json, line.strip_prefix('{')) {
            // The event named it already (the mesh's do).
            (true, _) if line.contains("\"node\":") => writer.write_str(&line),
            // Node names are DNS labels: nothing to escape.
            (true, Some(rest)) => write!(writer, "{{\"node\":\"{}\",{rest}", self.node),
            _ => write!(writer, "node={} {line}", self.node),
        }
    }
}

/// Install the process's logger: `RUST_LOG` or `default` filters;
/// `node`, when one process is one node, is put on every line.
pub fn init(default: &str, format: LogFormat, node: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal, and only without the node prefix (the
    // prefix is written around an uncoloured line).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && node.is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match (format, node) {
        (LogFormat::Text, None) => builder.try_init(),
        (LogFormat::Json, None) => builder
            .event_format(tracing_subscriber::fmt::format().json().flatten_event(true))
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .try_init(),
        (LogFormat::Text, Some(node)) => builder
            .event_format(WithNode {
                node: node.to_string(),
                json: false,
                inner: tracing_subscriber::fmt::format(),
            })
            .try_init(),
        (LogFormat::Json, Some(node)) => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(WithNode {
                node: node.to_string(),
                json: true,
                inner: tracing_subscriber::fmt::format().json().flatten_event(true),
            })
            .try_init(),
    };
}
