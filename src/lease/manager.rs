//! The task behind one Vault credential source.
//!
//! It asks [`next_action`] what to do, does it against Vault, records the
//! outcome in the [`LeaseState`], publishes generations to the sessions and
//! sleeps until the schedule, a session event or a retired generation going
//! unused wakes it. Vault failures are retried with exponential backoff and
//! jitter while the current generation keeps serving until its deadline.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::schedule::{
    next_action, Action, GenSource, GenState, LeaseState, Policy, Term, TokenState,
};
use super::stats::LeaseStats;
use crate::config::VaultRoleKind;
use crate::credentials::{CredentialPublisher, Generation};
use crate::secret::{ExposeSecret, SecretString};
use crate::vault::{Authenticator, VaultClient, VaultError};

/// A given token (env / file) is re-read at most this often when it must change.
const GIVEN_TOKEN_HOLD: Duration = Duration::from_secs(10);

/// Outcome of one Vault step.
type Step = Result<(), VaultError>;

pub(crate) struct Manager {
    pub(super) name: String,
    pub(super) client: VaultClient,
    pub(super) auth: Authenticator,
    pub(super) role: String,
    pub(super) kind: VaultRoleKind,
    pub(super) mount: String,
    pub(super) policy: Policy,
    pub(super) state: LeaseState,
    pub(super) publisher: CredentialPublisher,
    pub(super) stats: Arc<LeaseStats>,
    pub(super) token: Option<SecretString>,
    pub(super) token_owned: bool,
    pub(super) token_increment: Option<Duration>,
    pub(super) epoch: u64,
    pub(super) next_id: u64,
    pub(super) gens: HashMap<u64, Arc<Generation>>,
    pub(super) unused: JoinSet<u64>,
    pub(super) failures: u32,
    pub(super) last_failure: Option<String>,
    pub(super) events_open: bool,
    pub(super) last_watch: Instant,
}

pub(super) fn jitter() -> f64 {
    rand::random::<f64>()
}

pub(super) fn human(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

impl Manager {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        client: VaultClient,
        auth: Authenticator,
        role: &str,
        kind: VaultRoleKind,
        mount: &str,
        policy: Policy,
        publisher: CredentialPublisher,
        stats: Arc<LeaseStats>,
    ) -> Manager {
        Manager {
            name: name.to_string(),
            client,
            auth,
            role: role.to_string(),
            kind,
            mount: mount.to_string(),
            policy,
            state: LeaseState::default(),
            publisher,
            stats,
            token: None,
            token_owned: false,
            token_increment: None,
            epoch: 0,
            next_id: 1,
            gens: HashMap::new(),
            unused: JoinSet::new(),
            failures: 0,
            last_failure: None,
            events_open: true,
            last_watch: Instant::now(),
        }
    }

    /// Runs actions until the first generation is published. Errors that
    /// retrying cannot fix are returned (fatal at startup); a retryable one
    /// returns `Ok` and leaves the rest to [`Manager::run`].
    pub async fn startup(&mut self) -> Result<(), VaultError> {
        for _ in 0..8 {
            let action = next_action(&self.state, Instant::now(), &self.policy);
            match action {
                Action::Login | Action::NewGeneration => {}
                _ => return Ok(()),
            }
            if let Err(e) = self.execute(&action).await {
                if e.retryable() {
                    self.on_failure(&action, e);
                    return Ok(());
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// The main loop; returns when `shutdown` carries `Some(revoke_token)`.
    pub async fn run(mut self, mut shutdown: watch::Receiver<Option<bool>>) {
        loop {
            let stop = *shutdown.borrow();
            if let Some(revoke) = stop {
                self.shutdown(revoke).await;
                return;
            }
            self.sync_deadlines();
            let now = Instant::now();
            let action = self
                .given_token_changed(now)
                .unwrap_or_else(|| next_action(&self.state, now, &self.policy));
            self.refresh_readiness(now);
            let Action::Wait(until) = action else {
                let step = tokio::select! {
                    r = self.execute(&action) => r,
                    r = shutdown.changed() => match r {
                        Ok(()) => continue,
                        Err(_) => return,
                    },
                };
                match step {
                    Ok(()) => self.on_success(),
                    Err(e) => self.on_failure(&action, e),
                }
                continue;
            };
            let until = match (until, self.auth.watch_interval()) {
                (Some(u), Some(w)) => Some(u.min(now + w)),
                (u, w) => u.or(w.map(|w| now + w)),
            };
            // Wake at the next generation end too, to publish "none" on time.
            let sleep = async {
                match until {
                    Some(u) => tokio::time::sleep_until(u).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = shutdown.changed() => if r.is_err() {
                    // The VaultSource handle is gone without a shutdown call.
                    return;
                },
                ev = self.publisher.events.recv(), if self.events_open => match ev {
                    Some(ev) => self.on_event(ev).await,
                    None => self.events_open = false,
                },
                Some(Ok(id)) = self.unused.join_next(), if !self.unused.is_empty() => {
                    debug!(source = %self.name, generation = id, "retired generation has no connection left");
                    self.state.mark_unused(id);
                }
                _ = sleep => {}
            }
        }
    }

    /// Publishes each generation's hard deadline as soon as it is learned
    /// (a capped lease renewal, a capped token renewal revealing the token's
    /// max TTL, a re-login fixing the old token's end, a token revoked out
    /// of band), so sessions and the `strict` deadline policy act on it.
    pub(super) fn sync_deadlines(&self) {
        let token = self.state.token.as_ref();
        for g in self.state.current.iter().chain(self.state.retired.iter()) {
            let Some(gen) = self.gens.get(&g.id) else {
                continue;
            };
            let known = g.deadline(token).map(|d| d.into_std());
            if gen.deadline() != known {
                debug!(
                    source = %self.name,
                    generation = g.id,
                    deadline_in = %known.map_or("unknown".into(), |d| human(d.saturating_duration_since(std::time::Instant::now()))),
                    "generation deadline learned"
                );
                gen.set_deadline(known);
            }
        }
    }

    /// For a token read from a file (Vault Agent sink): a changed file means
    /// log in (adopt the new token) now.
    fn given_token_changed(&mut self, now: Instant) -> Option<Action> {
        let interval = self.auth.watch_interval()?;
        if now.saturating_duration_since(self.last_watch) < interval {
            return None;
        }
        self.last_watch = now;
        let token = self.token.as_ref()?;
        self.auth.token_changed(token).then(|| {
            info!(source = %self.name, "the token file changed: switching to the new token");
            Action::Login
        })
    }

    async fn execute(&mut self, action: &Action) -> Step {
        match action {
            Action::Login => self.login().await,
            Action::RenewToken => self.renew_token().await,
            Action::NewGeneration => self.new_generation().await,
            Action::RenewLease { generation } => self.renew_lease(*generation).await,
            Action::ReadStatic => self.read_static().await,
            Action::Revoke { generation } => self.revoke(*generation).await,
            Action::Wait(_) => Ok(()),
        }
    }

    fn token(&self) -> Result<SecretString, VaultError> {
        self.token.clone().ok_or_else(|| VaultError::Setting {
            setting: "vault".into(),
            detail: "no token (internal: login did not run)".into(),
        })
    }

    async fn login(&mut self) -> Step {
        let login = self.auth.login(&self.client).await?;
        let now = Instant::now();
        let same = self
            .token
            .as_ref()
            .is_some_and(|t| t.expose_secret() == login.grant.token.expose_secret());
        let g = &login.grant;
        if same {
            // A given token that has not been replaced yet: keep it, look again later.
            debug!(source = %self.name, "the given token has not changed yet");
            if let Some(t) = self.state.token.as_mut() {
                t.relogin_hold = Some(now + GIVEN_TOKEN_HOLD);
                t.hard_death = login.hard_ttl.map(|h| now + h).or(t.hard_death);
                if let Some(ttl) = g.ttl {
                    t.term = Some(Term {
                        granted_at: now,
                        ttl,
                        jitter: jitter(),
                    });
                }
            }
            return Ok(());
        }
        self.epoch += 1;
        LeaseStats::bump(&self.stats.logins);
        info!(
            source = %self.name,
            method = self.auth.method_name(),
            ttl = %g.ttl.map_or("none".to_string(), human),
            renewable = g.renewable,
            token_type = %g.token_type,
            "logged in to Vault"
        );
        self.state.install_token(TokenState {
            epoch: self.epoch,
            issued: now,
            term: g.ttl.map(|ttl| Term {
                granted_at: now,
                ttl,
                jitter: jitter(),
            }),
            renewable: g.renewable,
            hard_death: login.hard_ttl.map(|h| now + h),
            relogin_hold: None,
        });
        self.token_increment = g.ttl;
        self.token_owned = login.owned;
        self.token = Some(login.grant.token);
        Ok(())
    }

    async fn renew_token(&mut self) -> Step {
        let token = self.token()?;
        let inc = self.token_increment;
        match self.client.token_renew_self(&token, inc).await {
            Ok(g) => {
                let now = Instant::now();
                LeaseStats::bump(&self.stats.renewals);
                let capped = g.capped(inc);
                let ttl = g.ttl.unwrap_or_default();
                if capped {
                    info!(source = %self.name, left = %human(ttl),
                        "the Vault token reached its max TTL: logging in again before it ends");
                } else {
                    debug!(source = %self.name, ttl = %human(ttl), "token renewed");
                }
                self.state.token_renewed(now, ttl, capped, jitter());
                Ok(())
            }
            Err(e) if e.status() == Some(400) => {
                // Not renewable after all (batch token, or a periodic/max rule):
                // live with its current end and log in again before it.
                warn!(source = %self.name, error = %e, "the Vault token cannot be renewed: will log in again before it expires");
                if let Some(t) = self.state.token.as_mut() {
                    t.renewable = false;
                    t.hard_death = t.end();
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn new_generation(&mut self) -> Step {
        let token = self.token()?;
        let now_issue = Instant::now();
        let (username, password, source) = match self.kind {
            VaultRoleKind::Dynamic => {
                let c = self
                    .client
                    .database_creds(&token, &self.mount, &self.role)
                    .await?;
                let now = Instant::now();
                let capped = c.capped_at_issue() || !c.renewable;
                if c.capped_at_issue() {
                    self.state.learned_lease_max = Some(c.lease_duration);
                }
                let max_end = if capped {
                    Some(now + c.lease_duration)
                } else {
                    self.state.learned_lease_max.map(|m| now_issue + m)
                };
                let src = GenSource::Lease {
                    lease_id: c.lease_id,
                    term: Term {
                        granted_at: now,
                        ttl: c.lease_duration,
                        jitter: jitter(),
                    },
                    renewable: c.renewable,
                    increment: c.lease_duration,
                    max_end,
                };
                (c.username, c.password, src)
            }
            VaultRoleKind::Static => {
                let c = self
                    .client
                    .static_creds(&token, &self.mount, &self.role)
                    .await?;
                let now = Instant::now();
                let src = GenSource::Static {
                    rotates_at: now + c.ttl,
                    next_read: now + c.ttl.max(Duration::from_secs(1)) + self.policy.static_grace,
                };
                (c.username, c.password, src)
            }
        };
        self.publish(username, password, source, now_issue);
        Ok(())
    }

    /// Publishes a new current generation and retires the previous one.
    fn publish(
        &mut self,
        username: String,
        password: SecretString,
        source: GenSource,
        issued: Instant,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        let gen_state = GenState {
            id,
            issued,
            source,
            token_epoch: self.epoch,
            token_death: None,
            replace: false,
            dead: false,
            unused: false,
        };
        let deadline = gen_state.deadline(self.state.token.as_ref());
        let lease_ttl = match &gen_state.source {
            GenSource::Lease { term, .. } => human(term.ttl),
            GenSource::Static { rotates_at, .. } => {
                human(rotates_at.saturating_duration_since(issued))
            }
        };
        let gen = Generation::new(id, username, password, deadline.map(|d| d.into_std()));
        info!(
            source = %self.name,
            generation = id,
            user = %gen.username,
            ttl = %lease_ttl,
            deadline_in = %deadline.map_or("unknown".into(), |d| human(d.saturating_duration_since(Instant::now()))),
            "new credential generation published"
        );
        let retired = self.state.install_generation(gen_state);
        self.gens.insert(id, gen.clone());
        self.publisher.tx.send_replace(Some(gen));
        LeaseStats::bump(&self.stats.generations);
        self.stats
            .current_generation
            .store(id, std::sync::atomic::Ordering::Relaxed);
        if let Some(old) = retired.and_then(|r| self.gens.get(&r).cloned()) {
            old.retire();
            let old_id = old.id;
            self.unused.spawn(async move {
                old.wait_unused().await;
                old_id
            });
        }
    }

    async fn renew_lease(&mut self, id: u64) -> Step {
        let token = self.token()?;
        let Some((lease_id, increment)) = self
            .state
            .current
            .iter()
            .chain(self.state.retired.iter())
            .find(|g| g.id == id)
            .and_then(|g| match &g.source {
                GenSource::Lease {
                    lease_id,
                    increment,
                    ..
                } => Some((lease_id.clone(), *increment)),
                GenSource::Static { .. } => None,
            })
        else {
            return Ok(());
        };
        match self.client.lease_renew(&token, &lease_id, increment).await {
            Ok(r) => {
                LeaseStats::bump(&self.stats.renewals);
                let capped = r.capped(increment);
                if capped && self.state.current.as_ref().is_some_and(|g| g.id == id) {
                    info!(source = %self.name, generation = id, left = %human(r.lease_duration),
                        "lease reached its max TTL: starting the next generation");
                } else {
                    debug!(source = %self.name, generation = id, ttl = %human(r.lease_duration), "lease renewed");
                }
                self.state
                    .lease_renewed(id, Instant::now(), r.lease_duration, capped, jitter());
                Ok(())
            }
            Err(e) if e.is_lease_gone() => {
                warn!(source = %self.name, generation = id, error = %e,
                    "the lease is gone (revoked or expired outside sqlease): replacing its generation");
                self.state.generation_dead(id);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn read_static(&mut self) -> Step {
        let token = self.token()?;
        let c = self
            .client
            .static_creds(&token, &self.mount, &self.role)
            .await?;
        let now = Instant::now();
        let unchanged = self.state.current.as_ref().is_some_and(|cur| {
            self.gens.get(&cur.id).is_some_and(|g| {
                g.username == c.username
                    && g.password().expose_secret() == c.password.expose_secret()
            })
        });
        let next_read = now + c.ttl.max(Duration::from_secs(1)) + self.policy.static_grace;
        if unchanged {
            if let Some(GenSource::Static {
                rotates_at,
                next_read: nr,
            }) = self.state.current.as_mut().map(|g| &mut g.source)
            {
                *rotates_at = now + c.ttl;
                *nr = next_read;
            }
            debug!(source = %self.name, next_in = %human(c.ttl), "static role password unchanged");
            return Ok(());
        }
        let src = GenSource::Static {
            rotates_at: now + c.ttl,
            next_read,
        };
        self.publish(c.username, c.password, src, now);
        Ok(())
    }

    async fn revoke(&mut self, id: u64) -> Step {
        let Some(g) = self.state.retired.iter().find(|g| g.id == id).cloned() else {
            return Ok(());
        };
        let token_alive = self
            .state
            .token
            .as_ref()
            .is_some_and(|t| !t.dead(Instant::now()));
        if let (GenSource::Lease { lease_id, .. }, true, Some(token)) =
            (&g.source, token_alive, self.token.clone())
        {
            match self.client.lease_revoke(&token, lease_id).await {
                Ok(()) => {
                    LeaseStats::bump(&self.stats.revocations);
                    info!(source = %self.name, generation = id, "retired generation's lease revoked (MySQL user dropped)");
                }
                Err(e) if e.retryable() => return Err(e),
                Err(e) => warn!(source = %self.name, generation = id, error = %e,
                    "cannot revoke the retired lease: it will expire at its TTL (grant update on sys/leases/revoke to revoke early)"),
            }
        }
        self.state.remove_retired(id);
        self.gens.remove(&id);
        Ok(())
    }
}
