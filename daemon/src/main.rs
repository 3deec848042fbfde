//! daxfsd: vhost-user-fs daemon that serves the virtio-fs DAX window.

use std::process::ExitCode;

use clap::Parser;
use daxfsd::cli;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    let _ = args;
    ExitCode::SUCCESS
}
