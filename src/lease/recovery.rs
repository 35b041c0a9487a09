//! How the manager reacts: session events, failures (backoff, logging
//! once at the right level), readiness, and the shutdown revocations.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use super::manager::{human, jitter, Manager};
use super::schedule::{Action, GenSource, GenState};
use super::stats::LeaseStats;
use crate::credentials::SourceEvent;
use crate::vault::VaultError;

/// First retry delay after a failure.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Longest retry delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Backoff cap while no usable generation exists: clients are failing, so
/// Vault is retried often enough to serve within seconds of its return.
const BACKOFF_MAX_UNSERVED: Duration = Duration::from_secs(3);
/// Retry delay after an error retrying cannot fix soon (policy, role, login).
const FIX_NEEDED_DELAY: Duration = Duration::from_secs(60);

impl Manager {
    pub(super) async fn on_event(&mut self, ev: SourceEvent) {
        match ev {
            SourceEvent::RotateNow => {
                info!(source = %self.name, "rotation requested: starting a new generation");
                self.state.rotate_now();
            }
            SourceEvent::AuthRejected { generation } => {
                let is_current = self
                    .state
                    .current
                    .as_ref()
                    .is_some_and(|g| g.id == generation && !g.dead);
                if !is_current {
                    return;
                }
                warn!(source = %self.name, generation, "MySQL refused this generation's credentials: checking the Vault token and replacing the generation");
                self.state.generation_dead(generation);
                self.publisher.tx.send_replace(None);
                if let Some(token) = self.token.clone() {
                    match self.client.token_lookup_self(&token).await {
                        Err(e) if e.is_permission_denied() => {
                            warn!(source = %self.name, "the Vault token was revoked or expired: logging in again");
                            self.state.token_revoked(Instant::now());
                        }
                        Err(e) => debug!(source = %self.name, error = %e, "token check failed"),
                        Ok(_) => {}
                    }
                }
            }
        }
    }

    pub(super) fn on_success(&mut self) {
        if self.failures > 0 {
            info!(source = %self.name, after = self.failures, "Vault answers again");
        }
        self.failures = 0;
        self.last_failure = None;
        self.state.not_before = None;
    }

    pub(super) fn on_failure(&mut self, action: &Action, e: VaultError) {
        LeaseStats::bump(&self.stats.failures);
        let now = Instant::now();
        if e.is_invalid_token() && !matches!(action, Action::Login) {
            // Our token is dead (revoked out of band, or expired): log in again at once.
            warn!(source = %self.name, error = %e, "the Vault token is no longer valid: logging in again");
            self.state.token_revoked(now);
            return;
        }
        self.failures = self.failures.saturating_add(1);
        let unserved = !self
            .state
            .current
            .as_ref()
            .is_some_and(|g| g.usable(now, self.state.token.as_ref()));
        let cap = if unserved {
            BACKOFF_MAX_UNSERVED
        } else {
            BACKOFF_MAX
        };
        let delay = if e.retryable() {
            let exp = BACKOFF_BASE.saturating_mul(1u32 << self.failures.min(8).saturating_sub(1));
            exp.min(cap).mul_f64(0.5 + jitter() / 2.0)
        } else {
            FIX_NEEDED_DELAY
        };
        self.state.not_before = Some(now + delay);
        let serving = match self.state.current.as_ref() {
            Some(g) if g.usable(now, self.state.token.as_ref()) => {
                match self.state.current_deadline() {
                    Some(d) => format!(
                        "generation {} keeps serving (deadline in {})",
                        g.id,
                        human(d.saturating_duration_since(now))
                    ),
                    None => format!("generation {} keeps serving", g.id),
                }
            }
            _ => "no valid credentials: new upstream connections fail until this succeeds".into(),
        };
        let key = format!("{action:?}/{}", e.kind());
        let first = self.last_failure.as_deref() != Some(&key);
        self.last_failure = Some(key);
        let retry = human(delay.max(Duration::from_secs(1)));
        if !e.retryable() {
            error!(source = %self.name, step = ?action, error = %e, retry_in = %retry, "{serving}; fix the Vault setup");
        } else if first {
            warn!(source = %self.name, step = ?action, error = %e, retry_in = %retry, "{serving}; retrying with backoff");
        } else {
            debug!(source = %self.name, step = ?action, error = %e, retry_in = %retry, failures = self.failures, "still failing");
        }
        let _ = self
            .publisher
            .status
            .send(format!("Vault: {e} (retrying in {retry})"));
    }

    /// Publishes "none" when the current generation stopped working.
    pub(super) fn refresh_readiness(&mut self, now: Instant) {
        let usable = self.state.has_usable(now);
        let was = self
            .stats
            .ready
            .swap(usable, std::sync::atomic::Ordering::Relaxed);
        if usable {
            return;
        }
        if self.publisher.tx.borrow().is_some() {
            warn!(source = %self.name, "the current generation's credentials have expired: no valid credentials until Vault answers");
            self.publisher.tx.send_replace(None);
        }
        if was || self.failures == 0 {
            let _ = self
                .publisher
                .status
                .send("obtaining credentials from Vault".into());
        }
    }

    /// Revokes every lease still held and, if asked and ours, the token.
    pub(super) async fn shutdown(&mut self, revoke_token: bool) {
        self.publisher.tx.send_replace(None);
        let _ = self.publisher.status.send("shutting down".into());
        let Some(token) = self.token.clone() else {
            return;
        };
        let held: Vec<GenState> = self
            .state
            .current
            .take()
            .into_iter()
            .chain(self.state.retired.drain(..))
            .collect();
        for g in held {
            if let GenSource::Lease { lease_id, .. } = &g.source {
                match self.client.lease_revoke(&token, lease_id).await {
                    Ok(()) => {
                        LeaseStats::bump(&self.stats.revocations);
                        info!(source = %self.name, generation = g.id, "lease revoked at shutdown");
                    }
                    Err(e) => {
                        warn!(source = %self.name, generation = g.id, error = %e, "cannot revoke the lease at shutdown: it will expire at its TTL")
                    }
                }
            }
        }
        if revoke_token && self.token_owned {
            match self.client.token_revoke_self(&token).await {
                Ok(()) => info!(source = %self.name, "Vault token revoked at shutdown"),
                Err(e) => {
                    warn!(source = %self.name, error = %e, "cannot revoke the Vault token at shutdown")
                }
            }
        }
        self.unused.abort_all();
    }
}
