//! Log set-up: `RUST_LOG` levels (a quiet default otherwise), `LOG_FORMAT=text|json`, written
//! to stderr so stdout stays for a command's own output (`worker tap`, `gateway report rerun`).
//! Colour only when stderr is a terminal: escape codes in a file or a collector are noise.

use std::io::IsTerminal;

use inside_settings::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the process's subscriber; a second call (tests start many servers) keeps the first.
pub fn init_logs(debug: bool, format: LogFormat) {
    let default = if debug {
        "debug,hyper=info,sqlx=warn"
    } else {
        "info,sqlx=warn"
    };
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        // flattened: one object per line with the fields at the top, as collectors expect
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
