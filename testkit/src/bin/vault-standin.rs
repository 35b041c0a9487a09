//! Standalone Vault stand-in for the demo and manual testing.
//!
//! ```text
//! vault-standin --listen 127.0.0.1:8200 --root-token root
//! ```
//!
//! Configure it like a real Vault over HTTP (e.g. `config/vault-init.sh`): the
//! MySQL connection comes from `database/config/<name>`, as with real Vault.
//! Prints `VAULT_ADDR=http://<addr>` on stdout once it accepts connections and
//! runs until interrupted (Ctrl-C / SIGTERM).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use sqlease_testkit::vault::{StandinOptions, VaultStandin};

#[derive(Parser, Debug)]
#[command(
    name = "vault-standin",
    about = "Vault-compatible stand-in server for sqlease tests"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "VAULT_STANDIN_LISTEN", default_value = "127.0.0.1:8200")]
    listen: SocketAddr,
    /// Root token (like `vault server -dev -dev-root-token-id`).
    #[arg(
        long,
        env = "VAULT_STANDIN_ROOT_TOKEN",
        default_value = "root",
        hide_env_values = true
    )]
    root_token: String,
    /// Failed AppRole logins before lockout.
    #[arg(long, default_value_t = 5)]
    lockout_threshold: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let standin = VaultStandin::start(StandinOptions {
        root_token: args.root_token,
        listen: args.listen,
        lockout_threshold: args.lockout_threshold,
        ..StandinOptions::default()
    })?;
    println!("VAULT_ADDR={}", standin.url());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        anyhow::Ok(())
    })?;
    drop(standin);
    std::thread::sleep(Duration::from_millis(10));
    Ok(())
}
