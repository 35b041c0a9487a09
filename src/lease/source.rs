//! The public entry point: start a Vault credential source.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::manager::Manager;
use super::schedule::Policy;
use super::stats::LeaseStats;
use crate::config::{RotationConfig, VaultConfig, VaultRoleKind};
use crate::credentials::CredentialHandle;
use crate::vault::{Authenticator, ClientSettings, VaultClient, VaultError};

/// Longest a shutdown waits for revocations.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// The running task of a Vault credential source. Dropping it stops the
/// task without revoking anything; call [`VaultSource::shutdown`] to revoke.
pub struct VaultSource {
    name: String,
    stats: Arc<LeaseStats>,
    stop: watch::Sender<Option<bool>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for VaultSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSource")
            .field("name", &self.name)
            .field("stats", &self.stats.snapshot())
            .finish()
    }
}

impl VaultSource {
    /// Counters (logins, renewals, failures, generations, revocations).
    pub fn stats(&self) -> Arc<LeaseStats> {
        self.stats.clone()
    }

    /// Stops the task: publishes "no credentials", revokes every lease it
    /// holds (current and retired: close the sessions first, revocation
    /// drops the MySQL users) and, when `revoke_token` is set and sqlease
    /// logged in itself (AppRole, Kubernetes — never a given token), the
    /// token. Waits at most 15 s.
    pub async fn shutdown(mut self, revoke_token: bool) {
        let _ = self.stop.send(Some(revoke_token));
        if let Some(task) = self.task.take() {
            if tokio::time::timeout(SHUTDOWN_TIMEOUT, task).await.is_err() {
                warn!(source = %self.name, "Vault source did not stop within 15s");
            }
        }
    }
}

impl Drop for VaultSource {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts the credential source `name` for a Vault database role.
///
/// Logs in and obtains the first generation before returning, so a wrong
/// setting fails the start with a clear error (`VaultError::Setting` or
/// `LoginRejected` naming the key or environment variable to fix, or the
/// Vault error for an unknown role or a missing policy). If Vault is only
/// unreachable, sealed or failing with 5xx/429, it returns `Ok` at once
/// and keeps retrying in the background: the handle's `status()` says why
/// there is no generation yet.
pub async fn start_vault_source(
    name: &str,
    vault: &VaultConfig,
    role: &str,
    kind: VaultRoleKind,
    mount: &str,
    rotation: &RotationConfig,
) -> Result<(CredentialHandle, VaultSource), VaultError> {
    let client = VaultClient::new(&ClientSettings::from_config(vault)?)?;
    let auth = Authenticator::new(&vault.auth);
    auth.check_settings()?;
    start_with_client(
        name,
        client,
        auth,
        role,
        kind,
        mount,
        Policy::with_lead_time(rotation.lead_time),
    )
    .await
}

/// As [`start_vault_source`], with a ready client and schedule policy.
pub async fn start_with_client(
    name: &str,
    client: VaultClient,
    auth: Authenticator,
    role: &str,
    kind: VaultRoleKind,
    mount: &str,
    policy: Policy,
) -> Result<(CredentialHandle, VaultSource), VaultError> {
    let (handle, publisher) = CredentialHandle::channel(name);
    let stats = Arc::new(LeaseStats::default());
    info!(
        source = name,
        vault = client.address(),
        method = auth.method_name(),
        role,
        ?kind,
        "starting Vault credential source"
    );
    let mut manager = Manager::new(
        name,
        client,
        auth,
        role,
        kind,
        mount,
        policy,
        publisher,
        stats.clone(),
    );
    manager.startup().await?;
    let (stop, stop_rx) = watch::channel(None);
    let task = tokio::spawn(manager.run(stop_rx));
    Ok((
        handle,
        VaultSource {
            name: name.to_string(),
            stats,
            stop,
            task: Some(task),
        },
    ))
}
