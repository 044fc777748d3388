//! `wxlogin-bench`: see the library for what it measures and how.

use std::process::ExitCode;

use clap::Parser as _;
use wxlogin_bench::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    match wxlogin_bench::main(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("wxlogin-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
