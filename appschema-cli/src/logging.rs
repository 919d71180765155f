//! `-v` / `--log-format`: appschema's spans and events (see
//! `appschema_core::observe`) on stderr through `tracing-subscriber`.

use std::io::IsTerminal;

use clap::ValueEnum;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::EnvFilter;

/// How `-v` lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line (for log shippers).
    Json,
}

/// Installs the stderr subscriber: none without `-v` or `RUST_LOG` (the
/// output stays the progress lines alone); `-v` shows appschema's info
/// (runs, tenant creations), `-vv` debug (every schema's and tenant's step
/// with its duration, checkouts, switches), `-vvv` trace. `RUST_LOG`, when
/// set, is the filter instead.
pub fn init(verbose: u8, format: LogFormat) {
    let from_env = std::env::var_os(EnvFilter::DEFAULT_ENV).is_some();
    if verbose == 0 && !from_env {
        return;
    }
    let level = match verbose {
        0 | 1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = if from_env {
        EnvFilter::from_default_env()
    } else {
        EnvFilter::new(format!("{}={level}", appschema_core::observe::TARGET))
    };
    // A span's close line carries its duration (`time.busy`, `time.idle`).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_span_events(FmtSpan::CLOSE);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
