//! The `wgagent` command line: argument parsing and one function per verb.
//!
//! Owns: clap definitions, tracing setup, exit codes, human and `--json` output.
//! Leaves to the library: everything else. `anyhow` is used here only.

mod agent;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Userspace WireGuard agent serving a process-execution API on its tunnel address only.
#[derive(Debug, Parser)]
#[command(name = "wgagent", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent: join the overlay and serve the process API on the tunnel address.
    Agent {
        /// Agent configuration file (TOML).
        #[arg(long, short, env = "WGAGENT_CONFIG")]
        config: PathBuf,
    },
    /// Generate a private key (base64), like `wg genkey`.
    Genkey,
    /// Read a private key on stdin and print its public key, like `wg pubkey`.
    Pubkey,
}

/// Parses arguments, runs the verb, and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Genkey => {
            report(crate::keys::genkey(&mut std::io::stdout().lock()).map_err(Into::into))
        }
        Command::Pubkey => report(
            crate::keys::pubkey(&mut std::io::stdin().lock(), &mut std::io::stdout().lock())
                .map_err(Into::into),
        ),
        Command::Agent { config } => {
            init_tracing();
            report(runtime().and_then(|rt| rt.block_on(agent::run(&config))))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Logs go to stderr; `RUST_LOG` overrides the default `info`.
pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// One clear line on stderr and exit code 1 for any error.
fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wgagent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
