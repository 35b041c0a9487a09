//! Unit tests of the pure schedule: no Vault, no sleeping.

use super::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn policy(lead: u64) -> Policy {
    Policy::with_lead_time(secs(lead))
}

struct T0(Instant);

impl T0 {
    fn at(&self, s: f64) -> Instant {
        self.0 + Duration::from_secs_f64(s)
    }
}

fn t0() -> T0 {
    T0(Instant::now())
}

fn token(t: &T0, epoch: u64, ttl: u64, hard: Option<u64>) -> TokenState {
    TokenState {
        epoch,
        issued: t.at(0.0),
        term: Some(Term {
            granted_at: t.at(0.0),
            ttl: secs(ttl),
            jitter: 0.0,
        }),
        renewable: true,
        hard_death: hard.map(|h| t.at(h as f64)),
        relogin_hold: None,
    }
}

fn lease(t: &T0, id: u64, at: f64, ttl: u64, epoch: u64) -> GenState {
    GenState {
        id,
        issued: t.at(at),
        source: GenSource::Lease {
            lease_id: format!("database/creds/app/{id}"),
            term: Term {
                granted_at: t.at(at),
                ttl: secs(ttl),
                jitter: 0.0,
            },
            renewable: true,
            increment: secs(ttl),
            max_end: None,
        },
        token_epoch: epoch,
        token_death: None,
        replace: false,
        dead: false,
        unused: false,
    }
}

fn state(tok: TokenState, cur: Option<GenState>) -> LeaseState {
    LeaseState {
        token: Some(tok),
        current: cur,
        ..LeaseState::default()
    }
}

#[test]
fn login_first_then_generation() {
    let t = t0();
    let p = policy(60);
    assert_eq!(
        next_action(&LeaseState::default(), t.at(0.0), &p),
        Action::Login
    );
    let s = state(token(&t, 1, 1200, None), None);
    assert_eq!(next_action(&s, t.at(0.0), &p), Action::NewGeneration);
}

#[test]
fn renewals_at_two_thirds_with_jitter() {
    let t = t0();
    let p = policy(60);
    let mut s = state(token(&t, 1, 1200, None), Some(lease(&t, 1, 0.0, 3600, 1)));
    // Token renews at 800 s, the lease at 2400 s.
    assert_eq!(
        next_action(&s, t.at(1.0), &p),
        Action::Wait(Some(t.at(800.0)))
    );
    assert_eq!(next_action(&s, t.at(800.0), &p), Action::RenewToken);
    s.token_renewed(t.at(800.0), secs(1200), false, 0.0);
    assert_eq!(
        next_action(&s, t.at(801.0), &p),
        Action::Wait(Some(t.at(1600.0)))
    );
    s.token_renewed(t.at(1600.0), secs(1200), false, 0.0);
    assert_eq!(next_action(&s, t.at(2400.0), &p), Action::RenewToken);
    s.token_renewed(t.at(2400.0), secs(1200), false, 0.0);
    assert_eq!(
        next_action(&s, t.at(2400.0), &p),
        Action::RenewLease { generation: 1 }
    );
    // Full jitter takes 10% of the TTL off the renewal point.
    s.lease_renewed(1, t.at(2400.0), secs(3600), false, 1.0);
    let GenSource::Lease { term, .. } = &s.current.as_ref().unwrap().source else {
        unreachable!()
    };
    let expected = 2400.0 + 3600.0 * (2.0 / 3.0 - 0.1);
    let got = term.renew_at(&p).duration_since(t.at(0.0)).as_secs_f64();
    assert!((got - expected).abs() < 0.01, "{got} vs {expected}");
}

#[test]
fn backoff_waits() {
    let t = t0();
    let p = policy(60);
    let mut s = state(token(&t, 1, 1200, None), None);
    s.not_before = Some(t.at(5.0));
    assert_eq!(
        next_action(&s, t.at(1.0), &p),
        Action::Wait(Some(t.at(5.0)))
    );
    assert_eq!(next_action(&s, t.at(5.0), &p), Action::NewGeneration);
}

#[test]
fn capped_renewal_starts_next_generation_and_revokes_old_when_unused() {
    let t = t0();
    let p = policy(60);
    let mut s = state(
        token(&t, 1, 100_000, None),
        Some(lease(&t, 1, 0.0, 3600, 1)),
    );
    // Renewal at 2400 s comes back capped at 1000 s (max TTL 3400 s).
    s.lease_renewed(1, t.at(2400.0), secs(1000), true, 0.0);
    assert_eq!(s.learned_lease_max, Some(secs(3400)));
    assert_eq!(s.current_deadline(), Some(t.at(3400.0)));
    assert_eq!(next_action(&s, t.at(2400.0), &p), Action::NewGeneration);
    let mut next = lease(&t, 2, 2401.0, 3600, 1);
    if let GenSource::Lease { max_end, .. } = &mut next.source {
        *max_end = Some(t.at(2401.0 + 3400.0));
    }
    assert_eq!(s.install_generation(next), Some(1));
    // The retired one is capped: no renewal, wait for its end or its users.
    let a = next_action(&s, t.at(2402.0), &p);
    assert!(matches!(a, Action::Wait(Some(_))), "{a:?}");
    s.mark_unused(1);
    assert_eq!(
        next_action(&s, t.at(2403.0), &p),
        Action::Revoke { generation: 1 }
    );
    assert!(s.remove_retired(1).is_some());
    // Or at its end even if still used.
    let mut s2 = s.clone();
    s2.install_generation(lease(&t, 3, 2500.0, 3600, 1));
    assert_eq!(
        next_action(&s2, t.at(2500.0 + 3600.0), &p),
        Action::NewGeneration,
        "current (3) expired without renewal first"
    );
}

#[test]
fn deadline_within_lead_time_starts_next_generation() {
    let t = t0();
    let p = policy(300);
    // Max TTL (learned from an earlier generation) ends at 2000 s, before
    // the first term would: no renewal, rotate 300 s before the end.
    let mut g = lease(&t, 1, 0.0, 3600, 1);
    if let GenSource::Lease { max_end, .. } = &mut g.source {
        *max_end = Some(t.at(2000.0));
    }
    let s = state(token(&t, 1, 100_000, None), Some(g));
    assert_eq!(s.current_deadline(), Some(t.at(2000.0)));
    assert_eq!(
        next_action(&s, t.at(1.0), &p),
        Action::Wait(Some(t.at(1700.0)))
    );
    assert_eq!(next_action(&s, t.at(1700.0), &p), Action::NewGeneration);
}

#[test]
fn lead_time_is_clamped_for_short_leases() {
    let t = t0();
    let p = policy(60);
    // A 12 s lease that cannot be renewed past its max: rotate at 8 s.
    let mut g = lease(&t, 1, 0.0, 12, 1);
    if let GenSource::Lease { renewable, .. } = &mut g.source {
        *renewable = false;
    }
    let s = state(token(&t, 1, 100_000, None), Some(g));
    assert_eq!(s.current_deadline(), Some(t.at(12.0)));
    assert_eq!(
        next_action(&s, t.at(1.0), &p),
        Action::Wait(Some(t.at(8.0)))
    );
    assert_eq!(next_action(&s, t.at(8.0), &p), Action::NewGeneration);
    // A 3 s renewable lease renews at 2 s.
    let s = state(token(&t, 1, 100_000, None), Some(lease(&t, 1, 0.0, 3, 1)));
    assert_eq!(
        next_action(&s, t.at(0.5), &p),
        Action::Wait(Some(t.at(2.0)))
    );
    assert_eq!(p.effective_lead(secs(12)), secs(4));
    assert_eq!(p.effective_lead(secs(3600)), secs(60));
}

#[test]
fn token_hard_death_bounds_generation_and_triggers_relogin() {
    let t = t0();
    let p = policy(60);
    // Token renewable with a 1200 s max learned from a capped renewal.
    let mut s = state(token(&t, 1, 600, None), Some(lease(&t, 1, 0.0, 3600, 1)));
    s.token_renewed(t.at(400.0), secs(800), true, 0.0);
    assert_eq!(s.token.as_ref().unwrap().hard_death, Some(t.at(1200.0)));
    assert_eq!(s.current_deadline(), Some(t.at(1200.0)));
    // Capped: no more token renewals; relogin at 1200 - 60.
    assert_eq!(
        next_action(&s, t.at(500.0), &p),
        Action::Wait(Some(t.at(1140.0)))
    );
    assert_eq!(next_action(&s, t.at(1140.0), &p), Action::Login);
    s.install_token(TokenState {
        epoch: 2,
        issued: t.at(1140.0),
        term: Some(Term {
            granted_at: t.at(1140.0),
            ttl: secs(600),
            jitter: 0.0,
        }),
        renewable: true,
        hard_death: None,
        relogin_hold: None,
    });
    // The generation keeps the old token's death: within lead → next generation.
    assert_eq!(s.current.as_ref().unwrap().token_death, Some(t.at(1200.0)));
    assert_eq!(s.current_deadline(), Some(t.at(1200.0)));
    assert_eq!(next_action(&s, t.at(1140.0), &p), Action::NewGeneration);
    s.install_generation(lease(&t, 2, 1141.0, 3600, 2));
    assert_eq!(s.current_deadline(), None);
    // The retired one dies with the old token.
    assert_eq!(
        next_action(&s, t.at(1200.0), &p),
        Action::Revoke { generation: 1 }
    );
}

#[test]
fn non_renewable_token_relogin_is_clamped() {
    let t = t0();
    let p = policy(60);
    let mut tok = token(&t, 1, 12, Some(12));
    tok.renewable = false;
    let s = state(tok, Some(lease(&t, 1, 0.0, 3600, 1)));
    assert_eq!(
        next_action(&s, t.at(1.0), &p),
        Action::Wait(Some(t.at(8.0)))
    );
    assert_eq!(next_action(&s, t.at(8.0), &p), Action::Login);
}

#[test]
fn expired_token_means_login_then_new_generation() {
    let t = t0();
    let p = policy(60);
    let mut s = state(token(&t, 1, 30, None), Some(lease(&t, 1, 0.0, 3600, 1)));
    // Renewals failed (Vault down) past the token's TTL.
    assert_eq!(next_action(&s, t.at(30.0), &p), Action::Login);
    assert!(!s.has_usable(t.at(30.0)));
    s.install_token(token(&T0(t.at(31.0)), 2, 30, None));
    assert_eq!(next_action(&s, t.at(31.0), &p), Action::NewGeneration);
}

#[test]
fn token_revoked_out_of_band() {
    let t = t0();
    let p = policy(60);
    let mut s = state(token(&t, 1, 1200, None), Some(lease(&t, 1, 0.0, 3600, 1)));
    s.token_revoked(t.at(100.0));
    assert!(!s.has_usable(t.at(100.0)));
    assert_eq!(next_action(&s, t.at(100.0), &p), Action::Login);
    s.install_token(token(&T0(t.at(101.0)), 2, 1200, None));
    assert_eq!(next_action(&s, t.at(101.0), &p), Action::NewGeneration);
    s.install_generation(lease(&t, 2, 101.0, 3600, 2));
    // The old generation died with its token: forget it at once.
    assert_eq!(
        next_action(&s, t.at(101.0), &p),
        Action::Revoke { generation: 1 }
    );
}

#[test]
fn rotate_now_and_dead_generation() {
    let t = t0();
    let p = policy(60);
    let mut s = state(token(&t, 1, 1200, None), Some(lease(&t, 1, 0.0, 3600, 1)));
    s.rotate_now();
    assert_eq!(next_action(&s, t.at(1.0), &p), Action::NewGeneration);
    let mut s = state(token(&t, 1, 1200, None), Some(lease(&t, 1, 0.0, 3600, 1)));
    s.generation_dead(1);
    assert_eq!(next_action(&s, t.at(1.0), &p), Action::NewGeneration);
    s.install_generation(lease(&t, 2, 1.0, 3600, 1));
    assert_eq!(
        next_action(&s, t.at(1.0), &p),
        Action::Revoke { generation: 1 }
    );
}

#[test]
fn retired_leases_in_use_are_still_renewed() {
    let t = t0();
    let p = policy(60);
    let mut s = state(token(&t, 1, 100_000, None), Some(lease(&t, 1, 0.0, 300, 1)));
    s.install_generation(lease(&t, 2, 100.0, 3600, 1));
    assert_eq!(
        next_action(&s, t.at(200.0), &p),
        Action::RenewLease { generation: 1 }
    );
}

#[test]
fn root_token_is_never_renewed() {
    let t = t0();
    let p = policy(60);
    let mut tok = token(&t, 1, 0, None);
    tok.term = None;
    let s = state(tok, Some(lease(&t, 1, 0.0, 3600, 1)));
    assert_eq!(
        next_action(&s, t.at(1.0), &p),
        Action::Wait(Some(t.at(2400.0)))
    );
}

#[test]
fn relogin_hold_delays_login() {
    let t = t0();
    let p = policy(60);
    let mut tok = token(&t, 1, 12, Some(12));
    tok.renewable = false;
    tok.relogin_hold = Some(t.at(10.0));
    let s = state(tok, Some(lease(&t, 1, 0.0, 3600, 1)));
    assert_eq!(
        next_action(&s, t.at(9.0), &p),
        Action::Wait(Some(t.at(10.0)))
    );
    assert_eq!(next_action(&s, t.at(10.0), &p), Action::Login);
    let mut s = s;
    s.token.as_mut().unwrap().relogin_hold = Some(t.at(20.0));
    assert_eq!(
        next_action(&s, t.at(13.0), &p),
        Action::Wait(Some(t.at(20.0)))
    );
}

#[test]
fn static_role_rereads_at_rotation() {
    let t = t0();
    let p = policy(60);
    let g = GenState {
        id: 1,
        issued: t.at(0.0),
        source: GenSource::Static {
            rotates_at: t.at(30.0),
            next_read: t.at(31.0),
        },
        token_epoch: 1,
        token_death: None,
        replace: false,
        dead: false,
        unused: false,
    };
    let mut s = state(token(&t, 1, 100_000, None), Some(g.clone()));
    assert_eq!(s.current_deadline(), Some(t.at(30.0)));
    assert_eq!(
        next_action(&s, t.at(1.0), &p),
        Action::Wait(Some(t.at(31.0)))
    );
    assert_eq!(next_action(&s, t.at(31.0), &p), Action::ReadStatic);
    let mut g2 = g;
    g2.id = 2;
    g2.source = GenSource::Static {
        rotates_at: t.at(61.0),
        next_read: t.at(62.0),
    };
    s.install_generation(g2);
    assert_eq!(
        next_action(&s, t.at(31.0), &p),
        Action::Revoke { generation: 1 }
    );
}

/// A small Vault model: leases with a default and max TTL, a token with a
/// TTL and max TTL that takes its leases with it. Drives `next_action`
/// over two minutes of simulated time and checks that valid credentials
/// are always published and actions never storm.
#[test]
fn simulation_short_ttls_never_gap() {
    for (lease_ttl, lease_max, tok_ttl, tok_max) in [
        (3u64, 12u64, 4u64, 20u64),
        (12, 12, 30, 300),
        (5, 40, 10, 25),
    ] {
        let t = t0();
        let p = policy(60);
        let mut s = LeaseState::default();
        let mut epoch = 0;
        let mut gen_id = 0;
        let mut actions = 0;
        let mut tok_issued = t.at(0.0);
        let step = 0.1;
        let mut now_s = 0.0;
        while now_s < 120.0 {
            let now = t.at(now_s);
            let mut n = 0;
            loop {
                n += 1;
                assert!(n < 10, "action storm at {now_s}: {s:?}");
                match next_action(&s, now, &p) {
                    Action::Wait(until) => {
                        assert!(until.is_none_or(|u| u > now), "wait in the past");
                        break;
                    }
                    Action::Login => {
                        epoch += 1;
                        tok_issued = now;
                        let hard = now + secs(tok_max);
                        s.install_token(TokenState {
                            epoch,
                            issued: now,
                            term: Some(Term {
                                granted_at: now,
                                ttl: secs(tok_ttl.min(tok_max)),
                                jitter: 0.5,
                            }),
                            renewable: true,
                            hard_death: (tok_ttl >= tok_max).then_some(hard),
                            relogin_hold: None,
                        });
                    }
                    Action::RenewToken => {
                        let left = (tok_issued + secs(tok_max)).saturating_duration_since(now);
                        let ttl = secs(tok_ttl).min(left);
                        s.token_renewed(now, ttl, ttl < secs(tok_ttl), 0.5);
                    }
                    Action::NewGeneration => {
                        gen_id += 1;
                        let mut g = lease(&T0(now), gen_id, 0.0, lease_ttl.min(lease_max), epoch);
                        if let (GenSource::Lease { max_end, .. }, Some(m)) =
                            (&mut g.source, s.learned_lease_max)
                        {
                            *max_end = Some(now + m);
                        }
                        s.install_generation(g);
                    }
                    Action::RenewLease { generation } => {
                        let g = s.gen_mut(generation).unwrap();
                        let left = (g.issued + secs(lease_max)).saturating_duration_since(now);
                        let ttl = secs(lease_ttl).min(left);
                        s.lease_renewed(generation, now, ttl, ttl < secs(lease_ttl), 0.5);
                    }
                    Action::Revoke { generation } => {
                        s.remove_retired(generation).unwrap();
                    }
                    Action::ReadStatic => unreachable!(),
                }
                actions += 1;
            }
            // Ground truth: the published lease is within its max and its token is alive.
            let cur = s.current.as_ref().unwrap();
            let real_end = (cur.issued + secs(lease_max)).min(match &cur.source {
                GenSource::Lease { term, .. } => term.expires(),
                GenSource::Static { .. } => unreachable!(),
            });
            assert!(now < real_end, "expired lease published at {now_s}");
            if cur.token_epoch == epoch {
                assert!(
                    !s.token.as_ref().unwrap().dead(now),
                    "dead token at {now_s}"
                );
            }
            assert!(s.retired.len() <= 3, "retired pile-up: {}", s.retired.len());
            now_s += step;
        }
        assert!(actions < 400, "too many actions: {actions}");
    }
}
