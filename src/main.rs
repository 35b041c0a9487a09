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
    /// Ask a running sqlease's admin listener for /readyz (or another path);
    /// exit 0 on HTTP 200. For container health checks (no curl needed).
    Health {
        /// Admin address (host:port).
        #[arg(long, default_value = sqlease::config::DEFAULT_ADMIN_BIND)]
        admin: String,
        /// Path to ask.
        #[arg(long, default_value = "/readyz")]
        path: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5)]
        timeout: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Cmd::Run) {
        Cmd::HashPassword => hash_password(),
        Cmd::Health {
            admin,
            path,
            timeout,
        } => health(
            &admin,
            &path,
            std::time::Duration::from_secs(timeout.max(1)),
        ),
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
                .worker_threads(2)
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

/// Worker threads for client sessions: `SQLEASE_WORKERS` (0 = run sessions
/// on the main multi-threaded runtime), default the number of CPUs.
fn cli_workers() -> usize {
    std::env::var("SQLEASE_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
}

/// Starts `n` threads, each running a single-threaded runtime forever.
fn spawn_workers(n: usize) -> anyhow::Result<Vec<tokio::runtime::Handle>> {
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("sqlease-worker-{i}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(std::future::pending::<()>());
            })?;
        handles.push(rx.recv()??);
    }
    Ok(handles)
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
    let workers = cli_workers();
    let running = tokio::select! {
        r = sqlease::app::start(cfg) => r?,
        _ = term.recv() => { tracing::info!("SIGTERM before the start completed"); return Ok(()); }
        _ = int.recv() => { tracing::info!("SIGINT before the start completed"); return Ok(()); }
    };
    if workers > 0 {
        let handles = spawn_workers(workers)?;
        let _ = running
            .shared
            .shards
            .set(sqlease::server::Shards::new(handles));
        tracing::info!(
            workers,
            "client sessions run on one event loop per worker thread"
        );
    }
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

/// A minimal blocking HTTP/1.0 GET against the admin listener.
fn health(admin: &str, path: &str, timeout: std::time::Duration) -> ExitCode {
    use std::io::Write;
    use std::net::{TcpStream, ToSocketAddrs};
    let addr = match admin.to_socket_addrs().ok().and_then(|mut a| a.next()) {
        Some(a) => a,
        None => {
            eprintln!("error: {admin:?} is not host:port");
            return ExitCode::from(2);
        }
    };
    let answer = (|| -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {admin}\r\n\r\n")?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf)
    })();
    match answer {
        Ok(text) => {
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            let ok = head.split(' ').nth(1) == Some("200");
            let first = head.lines().next().unwrap_or("");
            if ok {
                println!("{first}");
                ExitCode::SUCCESS
            } else {
                eprintln!("{first}\n{body}");
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {addr}{path}: {e}");
            ExitCode::from(1)
        }
    }
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
