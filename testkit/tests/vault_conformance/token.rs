//! Checklist items 15–22: tokens.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

async fn renew_self(fx: &Fx, tok: &str, body: Value) -> sqlease_testkit::vault::ApiResponse {
    fx.call("POST", "auth/token/renew-self", Some(tok), body)
        .await
}

#[tokio::test]
async fn c15_lookup_self_fields() {
    let fx = Fx::new().await;
    let tok = fx.app_token("c15", "app", json!({"token_ttl": 1200})).await;
    let r = fx
        .call("GET", "auth/token/lookup-self", Some(&tok), Value::Null)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = &r.json["data"];
    assert_eq!(d["display_name"], json!("approle"));
    assert_eq!(d["path"], json!("auth/approle/login"));
    assert_eq!(d["orphan"], json!(true));
    assert_eq!(d["type"], json!("service"));
    assert_eq!(d["meta"]["role_name"], json!("c15"));
    assert_eq!(d["id"], json!(tok));
    let ttl = d["ttl"].as_i64().expect("ttl");
    assert!((1199..=1200).contains(&ttl), "ttl {ttl}");
    assert!(d["expire_time"].is_string() && d["issue_time"].is_string());
}

#[tokio::test]
async fn c16_renew_self_increment_from_now() {
    let fx = Fx::new().await;
    let tok = fx
        .app_token(
            "c16",
            "app",
            json!({"token_ttl": 60, "token_max_ttl": 3600}),
        )
        .await;
    let r = renew_self(&fx, &tok, json!({"increment": 600})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.i64_at("/auth/lease_duration"), Some(600));
    assert_eq!(
        r.str_at("/auth/client_token").as_deref(),
        Some(tok.as_str())
    );
    // A second renewal resets to 600 from now again, not 1200.
    let r = renew_self(&fx, &tok, json!({"increment": "10m"})).await;
    assert_eq!(r.i64_at("/auth/lease_duration"), Some(600));
    assert_eq!(fx.sv.stats().token_renewals, 2);
}

#[tokio::test]
async fn c17_renew_self_without_increment_uses_role_ttl() {
    let fx = Fx::new().await;
    let tok = fx
        .app_token(
            "c17",
            "app",
            json!({"token_ttl": 120, "token_max_ttl": 3600}),
        )
        .await;
    let r = renew_self(&fx, &tok, json!({"increment": 900})).await;
    assert_eq!(r.i64_at("/auth/lease_duration"), Some(900));
    // The role's current token_ttl counts: change it, then renew without increment.
    fx.ok("POST", "auth/approle/role/c17", json!({"token_ttl": 150}))
        .await;
    let r = renew_self(&fx, &tok, Value::Null).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.i64_at("/auth/lease_duration"), Some(150));
}

#[tokio::test]
async fn c18_renew_self_capped_at_max_with_warning() {
    let fx = Fx::new().await;
    let tok = fx
        .app_token("c18", "app", json!({"token_ttl": 30, "token_max_ttl": 100}))
        .await;
    let r = renew_self(&fx, &tok, json!({"increment": 1000})).await;
    assert_eq!(r.status, 200);
    let ld = r.i64_at("/auth/lease_duration").expect("ld");
    assert!((99..=100).contains(&ld), "lease_duration {ld}");
    let w = r.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("TTL of \"16m40s\" exceeded the effective max_ttl of \""),
        "{}",
        w[0]
    );
    assert!(w[0].contains("exceeded the effective max_ttl of"));
}

#[tokio::test]
async fn c19_token_max_ttl_kills_token_and_its_leases() {
    let fx = Fx::new().await;
    fx.role("app", json!({"default_ttl": 3600})).await;
    let tok = fx
        .app_token("c19", "app", json!({"token_ttl": 2, "token_max_ttl": 3}))
        .await;
    let c = fx.creds("app", &tok).await;
    assert_eq!(c.status, 200, "{}", c.text);
    let user = c.str_at("/data/username").expect("user");
    assert!(fx.user_exists(&user).await);
    let r = renew_self(&fx, &tok, json!({"increment": 3600})).await;
    assert!(r.i64_at("/auth/lease_duration").unwrap_or(99) <= 3);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let r = fx
        .call("GET", "auth/token/lookup-self", Some(&tok), Value::Null)
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (403, vec![INVALID_TOKEN.to_string()])
    );
    assert!(
        fx.eventually(3, || async { !fx.user_exists(&user).await })
            .await,
        "user not dropped"
    );
    assert!(fx.sv.live_leases().is_empty());
}

#[tokio::test]
async fn c20_batch_tokens_cannot_be_renewed_or_revoked() {
    let fx = Fx::new().await;
    let tok = fx
        .app_token("c20", "app", json!({"token_type": "batch"}))
        .await;
    let r = renew_self(&fx, &tok, json!({})).await;
    assert_eq!(
        (r.status, r.json.clone()),
        (400, json!({"errors": ["batch tokens cannot be renewed"]}))
    );
    let r = fx
        .call("POST", "auth/token/revoke-self", Some(&tok), json!({}))
        .await;
    assert_eq!(
        (r.status, r.json.clone()),
        (400, json!({"errors": ["batch tokens cannot be revoked"]}))
    );
}

#[tokio::test]
async fn c21_revoke_self_revokes_leases_and_users() {
    let fx = Fx::new().await;
    fx.role("app", json!({})).await;
    let tok = fx.app_token("c21", "app", json!({})).await;
    let c = fx.creds("app", &tok).await;
    let lease = c.str_at("/lease_id").expect("lease");
    let user = c.str_at("/data/username").expect("user");
    let r = fx
        .call("POST", "auth/token/revoke-self", Some(&tok), json!({}))
        .await;
    assert_eq!(r.status, 204);
    assert!(r.text.is_empty());
    let r = fx
        .call("GET", "auth/token/lookup-self", Some(&tok), Value::Null)
        .await;
    assert_eq!(r.status, 403);
    let gone = fx
        .eventually(3, || async {
            let r = fx
                .root("PUT", "sys/leases/renew", json!({"lease_id": lease}))
                .await;
            r.status == 400 && r.errors() == vec!["lease not found".to_string()]
        })
        .await;
    assert!(gone, "lease still renewable");
    assert!(!fx.user_exists(&user).await);
}

#[tokio::test]
async fn c22_last_use_creds_are_revoked_immediately() {
    let fx = Fx::new().await;
    fx.role("c22", json!({})).await;
    let tok = fx
        .app_token("c22", "c22", json!({"token_num_uses": 1}))
        .await;
    let before = fx.count_users_like("v-approle-c22-").await;
    let r = fx.creds("c22", &tok).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        r.errors(),
        vec!["Secret cannot be returned; token had one use left, so leased credentials were immediately revoked.".to_string()]
    );
    assert_eq!(fx.count_users_like("v-approle-c22-").await, before);
    assert!(fx.sv.live_leases().is_empty());
    assert_eq!(fx.sv.creds_issued(), 1);
    // The token is used up.
    let r = fx
        .call("GET", "auth/token/lookup-self", Some(&tok), Value::Null)
        .await;
    assert_eq!(r.status, 403);
}
