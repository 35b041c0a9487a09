//! Starting and stopping a whole sqlease process (also used in-process by
//! the tests): credential sources, the upstream probe, listeners.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::config::{Config, CredentialConfig};
use crate::credentials::CredentialHandle;
use crate::server::{self, Shared};

/// A running proxy.
pub struct Running {
    /// (listener name, bound TCP address).
    pub listeners: Vec<(String, SocketAddr)>,
    pub shared: Arc<Shared>,
    pub sources: Vec<CredentialHandle>,
    /// Vault-backed sources (their managers), for stats and shutdown.
    pub vault_sources: Vec<crate::lease::VaultSource>,
    revoke_token_on_shutdown: bool,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// The bound address of a listener.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// Stops accepting; sessions finish their in-flight command and close
    /// (idle ones at once); waits up to `drain` for them; then revokes the
    /// leases this process holds (and its Vault token if configured).
    pub async fn shutdown(self, drain: Duration) {
        let _ = self.shutdown_tx.send(true);
        let deadline = tokio::time::Instant::now() + drain;
        while tokio::time::Instant::now() < deadline && !self.shared.registry.all().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = self.shared.registry.all().len();
        if left > 0 {
            warn!(
                sessions = left,
                "drain time over; closing the remaining sessions"
            );
        }
        for t in self.tasks {
            t.abort();
        }
        for v in self.vault_sources {
            v.shutdown(self.revoke_token_on_shutdown).await;
        }
        info!("shutdown complete");
    }
}

/// Starts everything the configuration describes.
pub async fn start(cfg: Config) -> anyhow::Result<Running> {
    start_with_sources(cfg, Default::default()).await
}

/// As [`start`], with some credential sources supplied by the caller
/// (embedding, tests) instead of built from the configuration.
pub async fn start_with_sources(
    cfg: Config,
    mut supplied: std::collections::BTreeMap<String, CredentialHandle>,
) -> anyhow::Result<Running> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = server::new_shared(&cfg, shutdown_rx);
    let mut sources = std::collections::BTreeMap::new();
    let mut vault_sources = Vec::new();
    for (name, c) in &cfg.credentials {
        if let Some(h) = supplied.remove(name) {
            sources.insert(name.clone(), h);
            continue;
        }
        let handle = match c {
            CredentialConfig::Static { .. } => server::static_source(name, c)
                .map_err(anyhow::Error::msg)?
                .ok_or_else(|| anyhow::anyhow!("credentials.{name}: not a static source"))?,
            CredentialConfig::Vault { role, kind, mount } => {
                let vault = cfg.vault.as_ref().ok_or_else(|| {
                    anyhow::anyhow!(
                        "credentials.{name} has type = \"vault\" but there is no [vault] section"
                    )
                })?;
                let (h, v) = crate::lease::start_vault_source(
                    name,
                    vault,
                    role,
                    *kind,
                    mount,
                    &cfg.rotation,
                )
                .await
                .map_err(|e| anyhow::anyhow!("credentials.{name}: {e}"))?;
                vault_sources.push(v);
                h
            }
        };
        sources.insert(name.clone(), handle);
    }
    let mut listeners = Vec::new();
    let mut tasks = Vec::new();
    for l in &cfg.listeners {
        let creds = sources
            .get(&l.upstream.credentials)
            .cloned()
            .ok_or_else(|| {
                anyhow::anyhow!("unknown credential source {}", l.upstream.credentials)
            })?;
        let target = server::upstream_target(l).map_err(anyhow::Error::msg)?;
        let info = server::probe_upstream(&target, &l.name).await;
        let bound = server::bind(l, creds, info)
            .await
            .map_err(anyhow::Error::msg)?;
        let addr = bound.local_addr();
        info!(listener = %l.name, %addr, upstream = %l.upstream.address, "listening");
        listeners.push((l.name.clone(), addr));
        tasks.push(tokio::spawn(server::serve(bound, Arc::clone(&shared))));
    }
    if listeners.is_empty() {
        warn!("no listener configured");
    }
    Ok(Running {
        listeners,
        shared,
        sources: sources.into_values().collect(),
        vault_sources,
        revoke_token_on_shutdown: cfg
            .vault
            .as_ref()
            .is_none_or(|v| v.revoke_token_on_shutdown),
        shutdown_tx,
        tasks,
    })
}
