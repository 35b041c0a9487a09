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
            match rt.block_on(run(cfg, path)) {
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

/// Runs until SIGTERM or SIGINT; SIGHUP re-reads the file and applies
/// the local users, passwords and client TLS certificates.
async fn run(cfg: Config, path: PathBuf) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Installed before anything else so a signal during a slow start (the
    // upstream probe, Vault) is not lost to the default action.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let running = tokio::select! {
        r = sqlease::app::start(cfg) => r?,
        _ = term.recv() => { tracing::info!("SIGTERM before the start completed"); return Ok(()); }
        _ = int.recv() => { tracing::info!("SIGINT before the start completed"); return Ok(()); }
    };
    let signal_name = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => {
                tracing::info!(file = %path.display(), "SIGHUP: reloading the configuration");
                match Config::load(&path) {
                    Ok(new) => {
                        let _ = running.reload(&new);
                    }
                    Err(e) => {
                        running
                            .shared
                            .metrics
                            .reload_failures_total
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(
                            problems = e.problems.len(),
                            "configuration reload refused; the previous settings stay in force:\n{e}"
                        );
                    }
                }
            }
        }
    };
    let drain = running.drain_timeout();
    tracing::info!(signal = signal_name, ?drain, "shutting down");
    running.shutdown(drain).await;
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
