//! Starting, reloading and stopping a whole sqlease process (also used
//! in-process by the tests): credential sources, the upstream probe,
//! listeners, the admin listener.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::admin::{self, AdminState, SourceView};
use crate::config::{Config, CredentialConfig, VaultAuthConfig};
use crate::credentials::CredentialHandle;
use crate::lease::{self, Policy, VaultSource};
use crate::server::{self, ListenerCtx, Shared};
use crate::vault::{Authenticator, ClientSettings, VaultClient};

/// Time the sessions still open after the drain get to close once told to.
const CLOSE_GRACE: Duration = Duration::from_secs(3);

/// A running proxy.
pub struct Running {
    /// (listener name, bound TCP address).
    pub listeners: Vec<(String, SocketAddr)>,
    /// Bound address of the admin listener, if configured.
    pub admin: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    pub sources: Vec<CredentialHandle>,
    /// Vault-backed sources (their managers), for stats and shutdown.
    pub vault_sources: Vec<VaultSource>,
    /// The Vault client the Vault sources share (request metrics, health).
    pub vault_client: Option<VaultClient>,
    ctxs: Vec<Arc<ListenerCtx>>,
    drain_timeout: Duration,
    revoke_token_on_shutdown: bool,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    admin_task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("listeners", &self.listeners)
            .field("admin", &self.admin)
            .finish_non_exhaustive()
    }
}

/// What a reload changed.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Listeners whose local users and client TLS were replaced.
    pub listeners: Vec<String>,
    /// Changes seen in the file that only a restart applies.
    pub needs_restart: Vec<String>,
}

impl Running {
    /// The bound address of a listener.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
    }

    /// `[shutdown] drain_timeout` of the configuration it was started with.
    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }

    /// Applies a new configuration's reloadable settings (SIGHUP): each
    /// listener's local users and passwords, client TLS certificates and
    /// handshake settings. Sessions already open are not touched; the next
    /// handshake uses the new settings. All or nothing: if one listener's
    /// settings cannot be built (unreadable certificate...), none changes.
    pub fn reload(&self, cfg: &Config) -> Result<Reloaded, String> {
        let r = self.try_reload(cfg);
        let m = &self.shared.metrics;
        match &r {
            Ok(done) => {
                m.reloads_total.fetch_add(1, Ordering::Relaxed);
                info!(listeners = ?done.listeners, "configuration reloaded: local users and client TLS replaced");
                for n in &done.needs_restart {
                    warn!("configuration reload: {n}: needs a restart to take effect");
                }
            }
            Err(e) => {
                m.reload_failures_total.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "configuration reload refused; the previous settings stay in force");
            }
        }
        r
    }

    fn try_reload(&self, cfg: &Config) -> Result<Reloaded, String> {
        let mut staged = Vec::new();
        let mut out = Reloaded::default();
        for ctx in &self.ctxs {
            match cfg.listeners.iter().find(|l| l.name == ctx.name) {
                Some(l) => {
                    let fe = server::frontend_config(l)
                        .map_err(|e| format!("listener {}: {e}", l.name))?;
                    if l.upstream.credentials != ctx.credentials.name
                        || server::upstream_target(l)
                            .map(|t| t.addr != ctx.target.addr)
                            .unwrap_or(true)
                    {
                        out.needs_restart
                            .push(format!("listener {}: upstream", l.name));
                    }
                    if Some(l.bind.as_str()) != self.configured_bind(&ctx.name) {
                        out.needs_restart.push(format!("listener {}: bind", l.name));
                    }
                    if l.max_connections != ctx.max_connections
                        || l.handshake_timeout != ctx.handshake_timeout
                    {
                        out.needs_restart.push(format!(
                            "listener {}: max_connections / handshake_timeout",
                            l.name
                        ));
                    }
                    staged.push((Arc::clone(ctx), fe));
                }
                None => out
                    .needs_restart
                    .push(format!("listener {} was removed", ctx.name)),
            }
        }
        for l in &cfg.listeners {
            if !self.ctxs.iter().any(|c| c.name == l.name) {
                out.needs_restart
                    .push(format!("listener {} was added", l.name));
            }
        }
        for (ctx, fe) in staged {
            ctx.frontend.store(fe);
            out.listeners.push(ctx.name.clone());
        }
        Ok(out)
    }

    fn configured_bind(&self, name: &str) -> Option<&str> {
        self.ctxs
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.bind.as_str())
    }

    /// Stops accepting; sessions finish their in-flight command and close
    /// (idle ones at once); waits up to `drain` for them, then tells the
    /// rest to close; then revokes the leases this process holds (and its
    /// Vault token if configured). The admin listener answers until the end
    /// (`/readyz` says "shutting down").
    pub async fn shutdown(mut self, drain: Duration) {
        let _ = self.shutdown_tx.send(true);
        let start = tokio::time::Instant::now();
        let open = self.shared.registry.all().len();
        info!(sessions = open, drain = ?drain, "stopped accepting; draining sessions");
        wait_sessions(&self.shared, start + drain).await;
        let left = self.shared.registry.all();
        if !left.is_empty() {
            warn!(
                sessions = left.len(),
                "drain time over; closing the remaining sessions"
            );
            for s in &left {
                let _ = s.kill.send(true);
            }
            wait_sessions(&self.shared, tokio::time::Instant::now() + CLOSE_GRACE).await;
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
        for v in self.vault_sources.drain(..) {
            v.shutdown(self.revoke_token_on_shutdown).await;
        }
        if let Some(t) = self.admin_task.take() {
            t.abort();
        }
        info!(took = ?start.elapsed(), "shutdown complete");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = self.admin_task.take() {
            t.abort();
        }
    }
}

async fn wait_sessions(shared: &Shared, until: tokio::time::Instant) {
    while tokio::time::Instant::now() < until && !shared.registry.all().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
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
    supplied: BTreeMap<String, CredentialHandle>,
) -> anyhow::Result<Running> {
    let revoke_token = cfg
        .vault
        .as_ref()
        .is_none_or(|v| v.revoke_token_on_shutdown);
    let mut vault_sources = Vec::new();
    let r = start_inner(&cfg, supplied, &mut vault_sources).await;
    if r.is_err() {
        // Do not leave leases (MySQL users) behind a failed start.
        for v in vault_sources.drain(..) {
            v.shutdown(revoke_token).await;
        }
    }
    r.map(|mut running| {
        running.vault_sources = vault_sources;
        running
    })
}

/// Every file the configuration reads a secret from, with the key naming it:
/// `{ file = ... }` passwords, role/secret ids and Vault tokens (such as a
/// Vault Agent sink), the admin token, and client TLS private keys. The
/// Kubernetes service-account token is left out: Kubernetes mounts it
/// world-readable by design.
pub fn secret_files(cfg: &Config) -> Vec<(String, std::path::PathBuf)> {
    use crate::secret::SecretSource;
    let mut out = Vec::new();
    let mut add = |key: String, s: Option<&SecretSource>| {
        if let Some(f) = s.and_then(SecretSource::file) {
            out.push((key, f.to_path_buf()));
        }
    };
    for l in &cfg.listeners {
        for u in &l.users {
            add(
                format!("listener.{}.users.{}.password", l.name, u.name),
                u.password.as_ref(),
            );
        }
    }
    for (name, c) in &cfg.credentials {
        if let CredentialConfig::Static { password, .. } = c {
            add(format!("credentials.{name}.password"), Some(password));
        }
    }
    if let Some(v) = &cfg.vault {
        match &v.auth {
            VaultAuthConfig::Approle {
                role_id, secret_id, ..
            } => {
                add("vault.auth.role_id".into(), role_id.as_ref());
                add("vault.auth.secret_id".into(), secret_id.as_ref());
            }
            VaultAuthConfig::Token { token } => add("vault.auth.token".into(), token.as_ref()),
            VaultAuthConfig::Kubernetes { .. } => {}
        }
    }
    if let Some(a) = &cfg.admin {
        add("admin.token".into(), a.token.as_ref());
    }
    for l in &cfg.listeners {
        if let Some(k) = &l.tls.key_file {
            out.push((format!("listener.{}.tls.key_file", l.name), k.clone()));
        }
    }
    out
}

/// Warns at startup about every secret file that group or others can read.
fn warn_readable_secret_files(cfg: &Config) {
    for (key, path) in secret_files(cfg) {
        if crate::secret::readable_by_others(&path) {
            warn!(
                setting = %key,
                file = %path.display(),
                "a file holding a secret is readable by group or others; restrict it (chmod 600)"
            );
        }
    }
}

async fn start_inner(
    cfg: &Config,
    mut supplied: BTreeMap<String, CredentialHandle>,
    vault_sources: &mut Vec<VaultSource>,
) -> anyhow::Result<Running> {
    warn_readable_secret_files(cfg);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = server::new_shared(cfg, shutdown_rx);
    let admin_listener = match &cfg.admin {
        // Bound first: a taken port fails the start before Vault is asked
        // for anything.
        Some(a) => Some(admin::bind(&a.bind).await.map_err(anyhow::Error::msg)?),
        None => None,
    };
    let mut sources = BTreeMap::new();
    let mut views = Vec::new();
    let mut vault_client: Option<VaultClient> = None;
    for (name, c) in &cfg.credentials {
        if let Some(h) = supplied.remove(name) {
            views.push(SourceView {
                handle: h.clone(),
                lease: None,
            });
            sources.insert(name.clone(), h);
            continue;
        }
        let handle = match c {
            CredentialConfig::Static { .. } => {
                let h = server::static_source(name, c)
                    .map_err(anyhow::Error::msg)?
                    .ok_or_else(|| anyhow::anyhow!("credentials.{name}: not a static source"))?;
                views.push(SourceView {
                    handle: h.clone(),
                    lease: None,
                });
                h
            }
            CredentialConfig::Vault { role, kind, mount } => {
                let vault = cfg.vault.as_ref().ok_or_else(|| {
                    anyhow::anyhow!("credentials.{name}: type = \"vault\" needs a [vault] section")
                })?;
                let client = match &vault_client {
                    Some(c) => c.clone(),
                    None => {
                        let c = VaultClient::new(&ClientSettings::from_config(vault)?)?;
                        vault_client = Some(c.clone());
                        c
                    }
                };
                let auth = Authenticator::new(&vault.auth);
                auth.check_settings()?;
                let (h, src) = lease::start_with_client(
                    name,
                    client,
                    auth,
                    role,
                    *kind,
                    mount,
                    Policy::with_lead_time(cfg.rotation.lead_time),
                )
                .await
                .map_err(|e| anyhow::anyhow!("credentials.{name}: {e}"))?;
                views.push(SourceView {
                    handle: h.clone(),
                    lease: Some(src.stats()),
                });
                vault_sources.push(src);
                h
            }
        };
        sources.insert(name.clone(), handle);
    }
    let mut listeners = Vec::new();
    let mut ctxs = Vec::new();
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
        ctxs.push(Arc::clone(&bound.ctx));
        tasks.push(tokio::spawn(server::serve(bound, Arc::clone(&shared))));
    }
    if listeners.is_empty() {
        warn!("no listener configured");
    }
    let mut admin_addr = None;
    let mut admin_task = None;
    if let (Some(a), Some(listener)) = (&cfg.admin, admin_listener) {
        let token = match &a.token {
            Some(t) => Some(
                t.resolve()
                    .map_err(|e| anyhow::anyhow!("admin.token: {e}"))?,
            ),
            None => None,
        };
        admin_addr = listener.local_addr().ok();
        let state = Arc::new(AdminState {
            shared: Arc::clone(&shared),
            listeners: ctxs.clone(),
            sources: views,
            vault: vault_client.clone(),
            token,
            started: Instant::now(),
        });
        info!(addr = ?admin_addr, "admin listener: /healthz /readyz /metrics /v1/sessions /v1/rotate");
        admin_task = Some(tokio::spawn(admin::serve(listener, state)));
    }
    Ok(Running {
        listeners,
        admin: admin_addr,
        shared,
        sources: sources.into_values().collect(),
        vault_sources: Vec::new(),
        vault_client,
        ctxs,
        drain_timeout: cfg.shutdown.drain_timeout,
        revoke_token_on_shutdown: cfg
            .vault
            .as_ref()
            .is_none_or(|v| v.revoke_token_on_shutdown),
        shutdown_tx,
        tasks,
        admin_task,
    })
}
