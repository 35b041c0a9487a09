//! The lease schedule as a pure function (design D6).
//!
//! [`next_action`] looks at what the manager knows (token, current and
//! retired generations) and the time, and says what to do next, or until
//! when to wait. It never sleeps or talks to Vault, so every rule below is
//! unit-tested with made-up instants:
//!
//! - the token and every renewable lease are renewed at about 2/3 of the
//!   TTL last granted (minus a jitter drawn by the caller, so a fleet of
//!   proxies does not renew in lockstep);
//! - a generation's hard deadline is the earliest of its lease's max TTL
//!   (learned when a renewal comes back capped) and the death of the token
//!   that created it (a service token takes its leases with it);
//! - the next generation starts when a renewal is capped, on request, or
//!   when the deadline is within `lead_time` — clamped to a third of the
//!   generation's life, so a 12 s lease rotates at 8 s rather than never;
//! - the token is replaced (re-login) before its own hard death, with the
//!   same clamp, so the next generation is taken under the new token;
//! - a retired generation is revoked once no connection uses it, or at
//!   its deadline;
//! - a static role is re-read when Vault rotates its password.

use std::time::Duration;

use tokio::time::Instant;

/// Tunables of the schedule (from `[rotation]` plus fixed constants).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Start the next generation this long before the current one's deadline.
    pub lead_time: Duration,
    /// Renew at this fraction of the TTL last granted.
    pub renew_fraction: f64,
    /// Up to this fraction of the TTL is taken off the renewal point (× jitter).
    pub jitter_span: f64,
    /// `lead_time` is clamped to this fraction of a generation's (or token's) life.
    pub max_lead_fraction: f64,
    /// Re-read a static role this long after Vault's rotation time.
    pub static_grace: Duration,
}

/// Renew at 2/3 of the TTL.
pub const RENEW_FRACTION: f64 = 2.0 / 3.0;
/// Renewal points spread over the 10% of the TTL before 2/3.
pub const JITTER_SPAN: f64 = 0.1;
/// Lead time at most a third of a generation's life.
pub const MAX_LEAD_FRACTION: f64 = 1.0 / 3.0;
/// Static roles are re-read one second after their rotation time.
pub const STATIC_GRACE: Duration = Duration::from_secs(1);

impl Policy {
    /// The default policy with the configured lead time.
    pub fn with_lead_time(lead_time: Duration) -> Policy {
        Policy {
            lead_time,
            renew_fraction: RENEW_FRACTION,
            jitter_span: JITTER_SPAN,
            max_lead_fraction: MAX_LEAD_FRACTION,
            static_grace: STATIC_GRACE,
        }
    }

    /// Lead time for something that lives `life` in total.
    pub fn effective_lead(&self, life: Duration) -> Duration {
        self.lead_time.min(life.mul_f64(self.max_lead_fraction))
    }
}

/// A TTL as last granted by Vault.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Term {
    /// When Vault answered.
    pub granted_at: Instant,
    pub ttl: Duration,
    /// In `[0, 1)`: how much of `jitter_span` to take off the renewal point.
    pub jitter: f64,
}

impl Term {
    pub fn expires(&self) -> Instant {
        self.granted_at + self.ttl
    }

    /// When to renew this term.
    pub fn renew_at(&self, p: &Policy) -> Instant {
        let frac = (p.renew_fraction - self.jitter.clamp(0.0, 1.0) * p.jitter_span).max(0.0);
        self.granted_at + self.ttl.mul_f64(frac)
    }
}

/// What is known about the current Vault token.
#[derive(Debug, Clone)]
pub struct TokenState {
    /// Increases with every login; generations remember theirs.
    pub epoch: u64,
    pub issued: Instant,
    /// `None`: the token never expires (e.g. a root token).
    pub term: Option<Term>,
    pub renewable: bool,
    /// The token dies at this instant whatever happens (max TTL reached, or
    /// a non-renewable token), when known.
    pub hard_death: Option<Instant>,
    /// Do not try to log in again before this (a given token that has not
    /// changed yet).
    pub relogin_hold: Option<Instant>,
}

impl TokenState {
    /// When the token stops working if it is not renewed again.
    pub fn end(&self) -> Option<Instant> {
        min_opt(self.term.map(|t| t.expires()), self.hard_death)
    }

    pub fn dead(&self, now: Instant) -> bool {
        self.end().is_some_and(|e| now >= e)
    }

    /// Renewing cannot extend the token any more.
    fn capped(&self) -> bool {
        match (self.term, self.hard_death) {
            (Some(t), Some(hd)) => t.expires() + Duration::from_secs(1) >= hd,
            _ => false,
        }
    }
}

/// Where a generation's credentials come from.
#[derive(Debug, Clone)]
pub enum GenSource {
    /// A dynamic user held by a lease.
    Lease {
        lease_id: String,
        term: Term,
        renewable: bool,
        /// Increment asked for at each renewal (the TTL granted at issue).
        increment: Duration,
        /// The lease's max TTL end (issue + max), when known.
        max_end: Option<Instant>,
    },
    /// A static role: Vault changes the password at `rotates_at`.
    Static {
        rotates_at: Instant,
        next_read: Instant,
    },
}

/// One generation as the schedule sees it.
#[derive(Debug, Clone)]
pub struct GenState {
    pub id: u64,
    pub issued: Instant,
    pub source: GenSource,
    /// Epoch of the token that created the lease.
    pub token_epoch: u64,
    /// Death of that token once it is no longer the current one (or was revoked).
    pub token_death: Option<Instant>,
    /// Start the next generation now (capped renewal, RotateNow, rejected).
    pub replace: bool,
    /// Credentials known not to work any more (revoked out of band).
    pub dead: bool,
    /// Retired and no connection uses it any more.
    pub unused: bool,
}

/// Everything the manager knows.
#[derive(Debug, Clone, Default)]
pub struct LeaseState {
    pub token: Option<TokenState>,
    pub current: Option<GenState>,
    pub retired: Vec<GenState>,
    /// Back off: no Vault call before this instant.
    pub not_before: Option<Instant>,
    /// The role's lease max TTL, learned from a capped renewal.
    pub learned_lease_max: Option<Duration>,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Log in (no token, token dead, or token near its hard death).
    Login,
    /// Renew the token.
    RenewToken,
    /// Obtain a new generation (dynamic creds, or first static read).
    NewGeneration,
    /// Renew the lease of this generation (current or retired but in use).
    RenewLease { generation: u64 },
    /// Re-read the static role's credentials.
    ReadStatic,
    /// Revoke (dynamic) or forget (static) this retired generation.
    Revoke { generation: u64 },
    /// Nothing due; wake up at this instant (or only on events).
    Wait(Option<Instant>),
}

fn min_opt(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

impl GenState {
    /// The death of the token that created it, if fixed.
    fn token_end(&self, token: Option<&TokenState>) -> Option<Instant> {
        match token {
            Some(t) if t.epoch == self.token_epoch && self.token_death.is_none() => t.hard_death,
            _ => self.token_death,
        }
    }

    /// Hard deadline: the credentials stop working at this instant whatever
    /// the manager does (`None` = not known to end).
    pub fn deadline(&self, token: Option<&TokenState>) -> Option<Instant> {
        match &self.source {
            GenSource::Lease {
                term,
                renewable,
                max_end,
                ..
            } => {
                let lease_end = if *renewable {
                    *max_end
                } else {
                    min_opt(Some(term.expires()), *max_end)
                };
                min_opt(lease_end, self.token_end(token))
            }
            GenSource::Static { rotates_at, .. } => Some(*rotates_at),
        }
    }

    /// When the credentials stop working if nothing more is renewed.
    fn end(&self, token: Option<&TokenState>) -> Option<Instant> {
        let soft = match &self.source {
            GenSource::Lease { term, .. } => Some(term.expires()),
            // The old password may outlive `rotates_at` by a little (Vault
            // rotates late): the re-read decides, not the clock.
            GenSource::Static { .. } => return None,
        };
        let token_soft = match token {
            Some(t) if t.epoch == self.token_epoch && self.token_death.is_none() => t.end(),
            _ => None,
        };
        min_opt(min_opt(soft, self.deadline(token)), token_soft)
    }

    /// Whether the credentials still work.
    pub fn usable(&self, now: Instant, token: Option<&TokenState>) -> bool {
        !self.dead && self.end(token).is_none_or(|e| now < e)
    }

    fn lease_renewal(&self, token: Option<&TokenState>, p: &Policy) -> Option<Instant> {
        match &self.source {
            GenSource::Lease {
                term, renewable, ..
            } if *renewable && !self.dead => {
                // Pointless once the term already reaches the hard deadline.
                let capped = self
                    .deadline(token)
                    .is_some_and(|d| term.expires() + Duration::from_secs(1) >= d);
                (!capped).then(|| term.renew_at(p))
            }
            _ => None,
        }
    }
}

/// Collects the earliest wake-up time.
#[derive(Default)]
struct Earliest(Option<Instant>);

impl Earliest {
    fn add(&mut self, t: Instant) {
        self.0 = min_opt(self.0, Some(t));
    }
}

/// Decides the next step. Pure: same inputs, same answer.
pub fn next_action(state: &LeaseState, now: Instant, p: &Policy) -> Action {
    if let Some(nb) = state.not_before.filter(|nb| now < *nb) {
        return Action::Wait(Some(nb));
    }
    let mut wake = Earliest::default();

    // 1. The token: everything else needs a live one.
    let Some(token) = state.token.as_ref() else {
        return Action::Login;
    };
    let hold = token.relogin_hold.filter(|h| now < *h);
    if token.dead(now) {
        return match hold {
            Some(h) => Action::Wait(Some(h)),
            None => Action::Login,
        };
    }
    if let Some(hd) = token.hard_death {
        let at = hd - p.effective_lead(hd.saturating_duration_since(token.issued));
        match hold {
            Some(h) => wake.add(h.max(at)),
            None if now >= at => return Action::Login,
            None => wake.add(at),
        }
    }
    if let Some(term) = token.term.filter(|_| token.renewable && !token.capped()) {
        let at = term.renew_at(p);
        if now >= at {
            return Action::RenewToken;
        }
        wake.add(at);
    }
    if let Some(end) = token.end() {
        wake.add(end);
    }
    let tok = Some(token);

    // 2. The current generation.
    let Some(cur) = state.current.as_ref() else {
        return Action::NewGeneration;
    };
    if cur.replace || !cur.usable(now, tok) {
        return Action::NewGeneration;
    }
    match &cur.source {
        GenSource::Lease { .. } => {
            if let Some(d) = cur.deadline(tok) {
                let at = d - p.effective_lead(d.saturating_duration_since(cur.issued));
                // When the current token's death is what binds, a new lease
                // under the same token would die just as soon: the re-login
                // (step 1) comes first.
                let bound_by_token = cur.token_epoch == token.epoch
                    && cur.token_death.is_none()
                    && token.hard_death.is_some_and(|hd| hd <= d);
                if !bound_by_token {
                    if now >= at {
                        return Action::NewGeneration;
                    }
                    wake.add(at);
                }
            }
            if let Some(at) = cur.lease_renewal(tok, p) {
                if now >= at {
                    return Action::RenewLease { generation: cur.id };
                }
                wake.add(at);
            }
            if let Some(e) = cur.end(tok) {
                wake.add(e);
            }
        }
        GenSource::Static { next_read, .. } => {
            if now >= *next_read {
                return Action::ReadStatic;
            }
            wake.add(*next_read);
        }
    }

    // 3. Retired generations: revoke when unused or past their end; keep
    //    renewing those still serving connections.
    for r in &state.retired {
        let end = min_opt(r.end(tok), r.deadline(tok));
        if r.unused || r.dead || end.is_some_and(|e| now >= e) {
            return Action::Revoke { generation: r.id };
        }
        if let Some(e) = end {
            wake.add(e);
        }
        if let Some(at) = r.lease_renewal(tok, p) {
            if now >= at {
                return Action::RenewLease { generation: r.id };
            }
            wake.add(at);
        }
    }
    Action::Wait(wake.0)
}

impl LeaseState {
    /// Installs a new token (after a login). Generations made under the
    /// previous token keep its end of life as their token death.
    pub fn install_token(&mut self, token: TokenState) {
        if let Some(old) = self.token.take() {
            let death = old.end();
            for g in self.current.iter_mut().chain(self.retired.iter_mut()) {
                if g.token_epoch == old.epoch && g.token_death.is_none() {
                    g.token_death = death;
                }
            }
        }
        self.token = Some(token);
    }

    /// Records a token renewal; `capped` fixes its hard death at the new end.
    pub fn token_renewed(&mut self, now: Instant, ttl: Duration, capped: bool, jitter: f64) {
        if let Some(t) = self.token.as_mut() {
            let term = Term {
                granted_at: now,
                ttl,
                jitter,
            };
            t.term = Some(term);
            if capped {
                t.hard_death = min_opt(t.hard_death, Some(term.expires()));
            }
        }
    }

    /// The token was revoked or expired out of band: it and its leases are gone.
    pub fn token_revoked(&mut self, now: Instant) {
        if let Some(t) = self.token.as_mut() {
            t.hard_death = Some(now);
            let epoch = t.epoch;
            for g in self.current.iter_mut().chain(self.retired.iter_mut()) {
                if g.token_epoch == epoch {
                    g.token_death = Some(g.token_death.map_or(now, |d| d.min(now)));
                }
            }
        }
    }

    /// Publishes `next` as current; returns the id of the generation retired.
    pub fn install_generation(&mut self, next: GenState) -> Option<u64> {
        let old = self.current.replace(next);
        old.map(|g| {
            let id = g.id;
            self.retired.push(g);
            id
        })
    }

    fn gen_mut(&mut self, id: u64) -> Option<&mut GenState> {
        self.current
            .iter_mut()
            .chain(self.retired.iter_mut())
            .find(|g| g.id == id)
    }

    /// Records a lease renewal. A capped one fixes the lease's max end,
    /// teaches the role's max TTL and asks for the next generation.
    pub fn lease_renewed(
        &mut self,
        id: u64,
        now: Instant,
        ttl: Duration,
        capped: bool,
        jitter: f64,
    ) {
        let mut learned = None;
        if let Some(g) = self.gen_mut(id) {
            if let GenSource::Lease { term, max_end, .. } = &mut g.source {
                *term = Term {
                    granted_at: now,
                    ttl,
                    jitter,
                };
                if capped {
                    let end = term.expires();
                    *max_end = min_opt(*max_end, Some(end));
                    learned = Some(end.saturating_duration_since(g.issued));
                    g.replace = true;
                }
            }
        }
        if learned.is_some() {
            self.learned_lease_max = learned;
        }
    }

    /// The generation's credentials no longer work (lease gone, or MySQL
    /// refused them): replace it now if it is current.
    pub fn generation_dead(&mut self, id: u64) {
        if let Some(g) = self.gen_mut(id) {
            g.dead = true;
            g.replace = true;
        }
    }

    /// An operator asked for a new generation.
    pub fn rotate_now(&mut self) {
        if let Some(g) = self.current.as_mut() {
            g.replace = true;
        }
    }

    /// No connection uses this retired generation any more.
    pub fn mark_unused(&mut self, id: u64) {
        if let Some(g) = self.retired.iter_mut().find(|g| g.id == id) {
            g.unused = true;
        }
    }

    /// Forgets a retired generation (after its revocation).
    pub fn remove_retired(&mut self, id: u64) -> Option<GenState> {
        let i = self.retired.iter().position(|g| g.id == id)?;
        Some(self.retired.remove(i))
    }

    /// The current generation's hard deadline.
    pub fn current_deadline(&self) -> Option<Instant> {
        self.current
            .as_ref()
            .and_then(|g| g.deadline(self.token.as_ref()))
    }

    /// Whether the current generation's credentials still work.
    pub fn has_usable(&self, now: Instant) -> bool {
        self.current
            .as_ref()
            .is_some_and(|g| g.usable(now, self.token.as_ref()))
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
