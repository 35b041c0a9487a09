//! Checklist items 34–45: leases.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

/// Creates role `name` and returns (lease_id, username) of fresh creds (root token).
async fn lease(fx: &Fx, name: &str, role: Value) -> (String, String) {
    fx.role(name, role).await;
    let r = fx.creds(name, fx.sv.root_token()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    (
        r.str_at("/lease_id").expect("l"),
        r.str_at("/data/username").expect("u"),
    )
}

async fn renew(fx: &Fx, token: &str, body: Value) -> sqlease_testkit::vault::ApiResponse {
    fx.call("PUT", "sys/leases/renew", Some(token), body).await
}

#[tokio::test]
async fn c34_renew_returns_same_lease() {
    let fx = Fx::new().await;
    let (l, _) = lease(&fx, "r34", json!({"default_ttl": 300, "max_ttl": 3600})).await;
    let r = renew(&fx, ROOT, json!({"lease_id": l, "increment": 1800})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_envelope(&r);
    assert_eq!(r.str_at("/lease_id"), Some(l));
    assert_eq!(r.json["renewable"], json!(true));
    assert_eq!(r.json["data"], Value::Null);
    assert_eq!(r.i64_at("/lease_duration"), Some(1800));
    assert_eq!(fx.sv.stats().lease_renewals, 1);
}

#[tokio::test]
async fn c35_renew_capped_at_max() {
    let fx = Fx::new().await;
    let (l, _) = lease(&fx, "r35", json!({"default_ttl": 30, "max_ttl": 100})).await;
    let r = renew(&fx, ROOT, json!({"lease_id": l, "increment": "1h"})).await;
    let ld = r.i64_at("/lease_duration").expect("ld");
    assert!((99..=100).contains(&ld), "{ld}");
    let w = r.warnings();
    assert!(
        w[0].starts_with("TTL of \"1h\" exceeded the effective max_ttl of \"1m"),
        "{w:?}"
    );
}

#[tokio::test]
async fn c36_renew_can_shorten() {
    let fx = Fx::new().await;
    let (l, _) = lease(&fx, "r36", json!({"default_ttl": 3000})).await;
    let r = renew(&fx, ROOT, json!({"lease_id": l, "increment": 10})).await;
    assert_eq!(r.i64_at("/lease_duration"), Some(10));
    let lk = fx
        .root("PUT", "sys/leases/lookup", json!({"lease_id": l}))
        .await;
    let ttl = lk.i64_at("/data/ttl").expect("ttl");
    assert!((9..=10).contains(&ttl), "{ttl}");
}

#[tokio::test]
async fn c37_increment_zero_uses_role_default() {
    let fx = Fx::new().await;
    let (l, _) = lease(&fx, "r37", json!({"default_ttl": 300, "max_ttl": 3600})).await;
    assert_eq!(
        renew(&fx, ROOT, json!({"lease_id": l, "increment": 50}))
            .await
            .i64_at("/lease_duration"),
        Some(50)
    );
    let r = renew(&fx, ROOT, json!({"lease_id": l, "increment": 0})).await;
    assert_eq!(r.i64_at("/lease_duration"), Some(300));
    let r = renew(&fx, ROOT, json!({"lease_id": l})).await;
    assert_eq!(r.i64_at("/lease_duration"), Some(300));
}

#[tokio::test]
async fn c38_renew_errors() {
    let fx = Fx::new().await;
    let r = renew(&fx, ROOT, json!({"lease_id": "database/creds/x/nope"})).await;
    assert_eq!(
        (r.status, r.json.clone()),
        (400, json!({"errors": ["lease not found"]}))
    );
    let r = renew(&fx, ROOT, json!({})).await;
    assert_eq!(
        (r.status, r.json.clone()),
        (400, json!({"errors": ["lease_id must be specified"]}))
    );
    let (l, _) = lease(&fx, "r38", json!({})).await;
    assert_eq!(
        fx.root("PUT", "sys/leases/revoke", json!({"lease_id": l}))
            .await
            .status,
        204
    );
    let r = renew(&fx, ROOT, json!({"lease_id": l})).await;
    assert_eq!(
        (r.status, r.json.clone()),
        (400, json!({"errors": ["lease not found"]}))
    );
}

#[tokio::test]
async fn c39_path_form_renew() {
    let fx = Fx::new().await;
    let (l, _) = lease(&fx, "r39", json!({"default_ttl": 300})).await;
    let r = fx
        .root(
            "PUT",
            &format!("sys/leases/renew/{l}"),
            json!({"increment": 120}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.str_at("/lease_id"), Some(l.clone()));
    assert_eq!(r.i64_at("/lease_duration"), Some(120));
    let r = fx
        .root("PUT", "sys/leases/renew/database/creds/r39/nope", json!({}))
        .await;
    assert_eq!(r.errors(), vec!["lease not found".to_string()]);
}

#[tokio::test]
async fn c40_lease_reaching_max_is_revoked() {
    let fx = Fx::new().await;
    let (l, u) = lease(&fx, "r40", json!({"default_ttl": 1, "max_ttl": 2})).await;
    assert!(fx.user_exists(&u).await);
    let r = renew(&fx, ROOT, json!({"lease_id": l, "increment": 60})).await;
    assert!(r.i64_at("/lease_duration").unwrap_or(99) <= 2);
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert!(
        fx.eventually(3, || async { !fx.user_exists(&u).await })
            .await
    );
    let r = renew(&fx, ROOT, json!({"lease_id": l})).await;
    assert_eq!(r.errors(), vec!["lease not found".to_string()]);
}

#[tokio::test]
async fn c41_lookup_fields() {
    let fx = Fx::new().await;
    let (l, _) = lease(&fx, "r41", json!({"default_ttl": 600})).await;
    let r = fx
        .root("PUT", "sys/leases/lookup", json!({"lease_id": l}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = &r.json["data"];
    assert_eq!(d["id"], json!(l));
    assert!(d["issue_time"].is_string() && d["expire_time"].is_string());
    assert_eq!(d["last_renewal"], Value::Null);
    assert_eq!(d["renewable"], json!(true));
    assert!((599..=600).contains(&d["ttl"].as_i64().unwrap_or(0)));
    renew(&fx, ROOT, json!({"lease_id": l})).await;
    let r = fx
        .root("PUT", "sys/leases/lookup", json!({"lease_id": l}))
        .await;
    assert!(r.json["data"]["last_renewal"].is_string());
    let r = fx
        .root(
            "PUT",
            "sys/leases/lookup",
            json!({"lease_id": "database/creds/x/y"}),
        )
        .await;
    assert_eq!(
        (r.status, r.json.clone()),
        (400, json!({"errors": ["invalid lease"]}))
    );
}

#[tokio::test]
async fn c42_revoke_sync_async_unknown() {
    let fx = Fx::new().await;
    let (l, u) = lease(&fx, "r42", json!({})).await;
    let r = fx
        .root("PUT", "sys/leases/revoke", json!({"lease_id": l}))
        .await;
    assert_eq!(r.status, 204);
    assert!(
        !fx.user_exists(&u).await,
        "user must be dropped before the 204"
    );
    let r2 = fx.creds("r42", ROOT).await;
    let (l2, u2) = (
        r2.str_at("/lease_id").expect("l"),
        r2.str_at("/data/username").expect("u"),
    );
    let r = fx
        .root(
            "PUT",
            "sys/leases/revoke",
            json!({"lease_id": l2, "sync": false}),
        )
        .await;
    assert_eq!(r.status, 202);
    assert!(
        fx.eventually(3, || async { !fx.user_exists(&u2).await })
            .await
    );
    let r = fx
        .root(
            "PUT",
            "sys/leases/revoke",
            json!({"lease_id": "database/creds/r42/unknown"}),
        )
        .await;
    assert_eq!(r.status, 204);
}

#[tokio::test]
async fn c43_revoke_prefix() {
    let fx = Fx::new().await;
    let (_, u1) = lease(&fx, "r43", json!({})).await;
    let r = fx.creds("r43", ROOT).await;
    let u2 = r.str_at("/data/username").expect("u");
    let (keep, ku) = lease(&fx, "r43other", json!({})).await;
    let r = fx
        .root(
            "PUT",
            "sys/leases/revoke-prefix/database/creds/r43",
            json!({}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert!(!fx.user_exists(&u1).await && !fx.user_exists(&u2).await);
    assert_eq!(fx.sv.live_leases(), vec![keep]);
    assert!(fx.user_exists(&ku).await);
}

#[tokio::test]
async fn c44_default_policy_can_renew_and_lookup_not_revoke() {
    let fx = Fx::new().await;
    let (l, _) = lease(&fx, "r44", json!({})).await;
    let (rid, sid) = fx.approle("c44", json!({})).await;
    let tok = fx
        .login(&rid, &sid)
        .await
        .str_at("/auth/client_token")
        .expect("tok");
    assert_eq!(
        renew(&fx, &tok, json!({"lease_id": l, "increment": 60}))
            .await
            .status,
        200
    );
    assert_eq!(
        fx.call(
            "PUT",
            "sys/leases/lookup",
            Some(&tok),
            json!({"lease_id": l})
        )
        .await
        .status,
        200
    );
    let r = fx
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(&tok),
            json!({"lease_id": l}),
        )
        .await;
    assert_eq!((r.status, r.errors()), (403, vec![DENIED.to_string()]));
}

#[tokio::test]
async fn c45_batch_token_leases_capped_by_token_life() {
    let fx = Fx::new().await;
    fx.role("r45", json!({"default_ttl": 3600})).await;
    let tok = fx
        .app_token(
            "c45",
            "r45",
            json!({"token_type": "batch", "token_ttl": 20}),
        )
        .await;
    let r = fx.creds("r45", &tok).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.i64_at("/lease_duration").unwrap_or(999) <= 20);
    let l = r.str_at("/lease_id").expect("l");
    let r = renew(&fx, &tok, json!({"lease_id": l, "increment": 3600})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.i64_at("/lease_duration").unwrap_or(999) <= 20);
}
