//! The `sluice` command.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

// Cargo.toml says why; the benches set the same allocator so their numbers are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Multi-tenant network-flow export for Skydive.
#[derive(Debug, Parser)]
#[command(name = "sluice", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one pipeline from an upstream flow-exporter YAML file until SIGINT/SIGTERM.
    Run {
        /// The pipeline file (e.g. config/secadvisor.yml).
        file: PathBuf,
    },
    /// Validate a pipeline file: print the resolved pipeline, or every error with key and line.
    Check {
        /// The pipeline file.
        file: PathBuf,
    },
    /// The multi-tenant service: REST API, pipeline supervisor, SQLite in the data folder.
    Serve(sluice::serve::ServeArgs),
    /// A Skydive analyzer simulator: flows over /ws/subscriber/flow, gremlin on /api/topology.
    Sim(Box<sluice::sim::SimArgs>),
    /// Guests: scaffold (new), build a .py, .js or Rust guest into a component, upload (deploy).
    Guest(sluice::guest_cli::GuestArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Check { file } => {
            print!("{}", sluice::run::check(&file)?);
            Ok(())
        }
        Command::Run { file } => {
            let shutdown = stop_on_signal();
            let summary = sluice::run::run(&file, shutdown).await?;
            let s = &summary.pipeline;
            tracing::info!(
                received = s.flows_received,
                records_written = s.records_written,
                objects_written = s.objects_written,
                bytes_written = s.bytes_written,
                write_errors = s.write_errors,
                left_in_spool = summary.left_in_spool,
                dropped = ?s.dropped,
                "pipeline stopped"
            );
            Ok(())
        }
        Command::Serve(args) => sluice::serve::serve(args, stop_on_signal()).await,
        Command::Sim(args) => sluice::sim::serve(*args, stop_on_signal()).await,
        Command::Guest(args) => sluice::guest_cli::run(args).await,
    }
}

/// A token cancelled on SIGINT or SIGTERM.
fn stop_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("signal received: flushing and stopping");
        cancel.cancel();
    });
    token
}
