//! Helpers of `bench/run.sh`:
//!
//! - `churn`: connect, authenticate, one query, disconnect, in a loop on N
//!   tasks of one process (as a PHP application does per request);
//! - `idle`: opens N connections, prints `READY <opened> <failed>` and holds
//!   them until killed;
//! - `report`: turns the raw results of a run into the markdown table of
//!   medians and ratios, with PASS/FAIL for the targets of issue 6;
//! - `free-port`: a free loopback TCP port.

mod report;

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use mysql_async::prelude::*;

#[derive(Parser, Debug)]
#[command(name = "sqlease-bench", about = "Helpers of bench/run.sh")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Connect, authenticate, one query, disconnect, in a loop.
    Churn {
        #[command(flatten)]
        target: Target,
        /// Concurrent client loops.
        #[arg(long, default_value_t = 8)]
        threads: usize,
        /// Length of the measurement.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
    },
    /// Opens connections and holds them until killed.
    Idle {
        #[command(flatten)]
        target: Target,
        /// Connections to open.
        #[arg(long, default_value_t = 5000)]
        count: usize,
        /// Connections being opened at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Longest time to hold them.
        #[arg(long, default_value_t = 600)]
        hold_seconds: u64,
    },
    /// Writes the markdown report of a run.
    Report(report::ReportArgs),
    /// Prints a free loopback TCP port.
    FreePort,
}

#[derive(Args, Debug, Clone)]
struct Target {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long)]
    port: u16,
    #[arg(long)]
    user: String,
    #[arg(long, env = "BENCH_PASSWORD", hide_env_values = true)]
    password: String,
    #[arg(long)]
    db: Option<String>,
}

impl Target {
    fn opts(&self) -> mysql_async::Opts {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.clone()))
            .db_name(self.db.clone())
            .prefer_socket(false)
            // Known settings: the driver then sends no query of its own
            // after the handshake, so a connection is exactly handshake +
            // the benchmark's query + COM_QUIT.
            .max_allowed_packet(Some(16 * 1024 * 1024))
            .wait_timeout(Some(28_800))
            .stmt_cache_size(0)
            .into()
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Report(args) => report::run(&args),
        Cmd::FreePort => {
            let l = TcpListener::bind("127.0.0.1:0")?;
            println!("{}", l.local_addr()?.port());
            Ok(())
        }
        Cmd::Churn {
            target,
            threads,
            seconds,
        } => runtime()?.block_on(churn(target, threads, seconds)),
        Cmd::Idle {
            target,
            count,
            concurrency,
            hold_seconds,
        } => runtime()?.block_on(idle(target, count, concurrency, hold_seconds)),
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

async fn one_connection(opts: &mysql_async::Opts) -> mysql_async::Result<()> {
    let mut c = mysql_async::Conn::new(opts.clone()).await?;
    c.query_drop("SELECT 1").await?;
    c.disconnect().await
}

async fn churn(target: Target, threads: usize, seconds: f64) -> Result<()> {
    let opts = target.opts();
    // One connection first: fails fast on a wrong address or password.
    one_connection(&opts).await?;
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..threads {
        let (opts, ok, failed, first_error) = (
            opts.clone(),
            Arc::clone(&ok),
            Arc::clone(&failed),
            Arc::clone(&first_error),
        );
        tasks.spawn(async move {
            while Instant::now() < deadline {
                match one_connection(&opts).await {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_error
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert_with(|| e.to_string());
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    let ok = ok.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    if let Some(e) = first_error.lock().unwrap_or_else(|e| e.into_inner()).take() {
        eprintln!("churn: first error: {e}");
    }
    println!(
        "conns_per_s={:.1} ok={ok} errors={failed} seconds={elapsed:.2}",
        ok as f64 / elapsed
    );
    Ok(())
}

async fn idle(target: Target, count: usize, concurrency: usize, hold: u64) -> Result<()> {
    let opts = target.opts();
    let mut conns = Vec::with_capacity(count);
    let mut failed = 0usize;
    let mut first_error = None;
    let mut tasks = tokio::task::JoinSet::new();
    let mut started = 0usize;
    while conns.len() + failed < count {
        while started < count && tasks.len() < concurrency.max(1) {
            let opts = opts.clone();
            tasks.spawn(async move {
                let mut c = mysql_async::Conn::new(opts).await?;
                // One round trip so that the session is fully set up.
                c.ping().await?;
                Ok::<_, mysql_async::Error>(c)
            });
            started += 1;
        }
        match tasks.join_next().await {
            Some(Ok(Ok(c))) => conns.push(c),
            Some(Ok(Err(e))) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
            Some(Err(e)) => {
                failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
            None => break,
        }
    }
    if let Some(e) = first_error {
        eprintln!("idle: first error: {e}");
    }
    println!("READY {} {failed}", conns.len());
    use tokio::io::AsyncWriteExt;
    tokio::io::stdout().flush().await?;
    tokio::time::sleep(Duration::from_secs(hold)).await;
    drop(conns);
    Ok(())
}
