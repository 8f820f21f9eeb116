//! The `payrun` binary: parses the command line and hands it to the library
//! (`payrun::cli::run`), which wires configuration, store, Dots client and commands.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = payrun::cli::Cli::parse();
    payrun::cli::init_tracing(&cli);
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let code = rt.block_on(payrun::cli::run(cli));
    ExitCode::from(code as u8)
}
