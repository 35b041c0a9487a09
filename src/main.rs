//! The `sqlease` command line: run, check-config, hash-password.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sqlease::config::{Config, LogFormat};
use sqlease::secret::SecretString;

/// MySQL proxy that serves one fixed local credential and rotates Vault
/// dynamic database users behind live connections.
#[derive(Parser)]
#[command(name = "sqlease", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Configuration file (for the default `run` command).
    #[arg(long, short, global = true, env = "SQLEASE_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the proxy (the default).
    Run,
    /// Validate a configuration file and print every problem found.
    CheckConfig {
        /// Also read every secret given as { env = .. } or { file = .. }.
        #[arg(long)]
        resolve_secrets: bool,
    },
    /// Read a password on stdin and print the password_hash to put in the config.
    HashPassword,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Cmd::Run) {
        Cmd::HashPassword => hash_password(),
        Cmd::CheckConfig { resolve_secrets } => {
            let Some(path) = cli.config else {
                eprintln!("error: --config FILE is required");
                return ExitCode::from(2);
            };
            match Config::load_with(&path, resolve_secrets) {
                Ok(_) => {
                    println!("{}: OK", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprint!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Run => {
            let Some(path) = cli.config else {
                eprintln!("error: --config FILE is required (or set SQLEASE_CONFIG)");
                return ExitCode::from(2);
            };
            let cfg = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(1);
                }
            };
            init_logging(&cfg);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    let running = sqlease::app::start(cfg).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    running.shutdown(std::time::Duration::from_secs(10)).await;
    Ok(())
}

fn hash_password() -> ExitCode {
    let mut s = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut s) {
        eprintln!("error: cannot read the password on stdin: {e}");
        return ExitCode::from(1);
    }
    let pw = s.trim_end_matches(['\n', '\r']).to_string();
    if pw.is_empty() {
        eprintln!("error: empty password; pipe it in: printf '%s' \"$PW\" | sqlease hash-password");
        return ExitCode::from(1);
    }
    let v = sqlease::auth::PasswordVerifier::from_password(&SecretString::from(pw));
    println!("{}", v.encode());
    ExitCode::SUCCESS
}
