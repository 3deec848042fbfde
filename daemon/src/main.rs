//! daxfsd: vhost-user-fs daemon that serves the virtio-fs DAX window.

use std::process::ExitCode;

use clap::CommandFactory;
use daxfsd::config::cli::Args;
use daxfsd::config::{capabilities_json, Config, ConfigError};
use daxfsd::process::syslog::Syslog;
use daxfsd::{error_chain, server};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let matches = match Args::command().try_get_matches() {
        Ok(matches) => matches,
        // clap's own errors, --help and --version print as clap prints them
        // and exit with clap's status (2 for an error, 0 for help).
        Err(clap_error) => clap_error.exit(),
    };
    if matches.get_flag("print_capabilities") {
        println!("{}", capabilities_json());
        return ExitCode::SUCCESS;
    }
    let config = match Config::from_matches(&matches) {
        Ok(config) => config,
        Err(ConfigError::Cli(clap_error)) => clap_error.exit(),
        Err(error) => {
            eprintln!("daxfsd: {}", error_chain(&error));
            return ExitCode::from(2);
        }
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) => EnvFilter::try_new(directives),
        Err(_) => EnvFilter::try_new(&config.log_level),
    };
    let filter = match filter {
        Ok(f) => f,
        Err(e) => {
            eprintln!("daxfsd: invalid --log-level / RUST_LOG filter: {e}");
            return ExitCode::from(2);
        }
    };
    if config.syslog {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .without_time()
            .with_writer(Syslog::connect())
            .init();
    } else {
        // Colour only on a terminal: logs usually go to a file or a journal.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
            && std::env::var_os("NO_COLOR").is_none();
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .init();
    }
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    match server::run(&config) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("daxfsd: {}", error_chain(&e));
            tracing::error!("{msg}");
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}
