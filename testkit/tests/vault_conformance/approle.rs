//! Checklist items 8–14: AppRole.

use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn c8_role_id_and_secret_id_fields() {
    let fx = Fx::new().await;
    fx.ok(
        "POST",
        "auth/approle/role/c8",
        json!({"secret_id_ttl": "10m", "secret_id_num_uses": 50}),
    )
    .await;
    let r = fx
        .root("GET", "auth/approle/role/c8/role-id", Value::Null)
        .await;
    assert_eq!(r.status, 200);
    assert!(!r.str_at("/data/role_id").unwrap_or_default().is_empty());
    let r = fx
        .root("POST", "auth/approle/role/c8/secret-id", json!({}))
        .await;
    assert_eq!(r.status, 200);
    assert!(!r.str_at("/data/secret_id").unwrap_or_default().is_empty());
    assert!(!r
        .str_at("/data/secret_id_accessor")
        .unwrap_or_default()
        .is_empty());
    assert_eq!(r.i64_at("/data/secret_id_ttl"), Some(600));
    assert_eq!(r.i64_at("/data/secret_id_num_uses"), Some(50));
    // custom role-id
    let r = fx
        .root(
            "POST",
            "auth/approle/role/c8/role-id",
            json!({"role_id": "custom-id"}),
        )
        .await;
    assert_eq!(r.status, 204);
    let r = fx
        .root("GET", "auth/approle/role/c8/role-id", Value::Null)
        .await;
    assert_eq!(r.str_at("/data/role_id").as_deref(), Some("custom-id"));
}

#[tokio::test]
async fn c9_login_response_fields() {
    let fx = Fx::new().await;
    fx.policy(
        "pol9",
        "path \"database/creds/x\" { capabilities = [\"read\"] }",
    )
    .await;
    let (rid, sid) = fx
        .approle(
            "c9",
            json!({"token_policies": "pol9", "token_ttl": 1200, "token_max_ttl": "1h"}),
        )
        .await;
    let r = fx.login(&rid, &sid).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_envelope(&r);
    assert_eq!(r.i64_at("/lease_duration"), Some(0));
    let a = &r.json["auth"];
    assert!(a["client_token"]
        .as_str()
        .unwrap_or_default()
        .starts_with("hvs."));
    assert!(!a["accessor"].as_str().unwrap_or_default().is_empty());
    assert_eq!(a["policies"], json!(["default", "pol9"]));
    assert_eq!(a["token_policies"], json!(["default", "pol9"]));
    assert_eq!(a["metadata"]["role_name"], json!("c9"));
    assert_eq!(a["lease_duration"], json!(1200));
    assert_eq!(a["renewable"], json!(true));
    assert_eq!(a["orphan"], json!(true));
    assert_eq!(a["token_type"], json!("service"));
    assert!(a.get("entity_id").is_some());
}

#[tokio::test]
async fn c10_login_errors() {
    let fx = Fx::new().await;
    let (rid, _sid) = fx.approle("c10", json!({})).await;
    let r = fx.login("no-such-role-id", "x").await;
    assert_eq!(
        (r.status, r.json.clone()),
        (400, json!({"errors": ["invalid role or secret ID"]}))
    );
    let r = fx.login(&rid, "wrong").await;
    assert_eq!(
        (r.status, r.json.clone()),
        (400, json!({"errors": ["invalid role or secret ID"]}))
    );
    let r = fx
        .call(
            "POST",
            "auth/approle/login",
            None,
            json!({"secret_id": "x"}),
        )
        .await;
    assert_eq!(
        (r.status, r.json.clone()),
        (400, json!({"errors": ["missing role_id"]}))
    );
    let r = fx
        .call("POST", "auth/approle/login", None, json!({"role_id": rid}))
        .await;
    assert_eq!(
        (r.status, r.json.clone()),
        (400, json!({"errors": ["missing secret_id"]}))
    );
}

#[tokio::test]
async fn c11_lockout_after_five_failures() {
    let fx = Fx::new().await;
    let (rid, sid) = fx.approle("c11", json!({})).await;
    for i in 0..5 {
        let r = fx.login(&rid, "wrong").await;
        assert_eq!(r.status, 400, "attempt {i}");
    }
    let r = fx.login(&rid, &sid).await;
    assert_eq!(
        (r.status, r.json.clone()),
        (403, json!({"errors": ["permission denied"]}))
    );
    // Unknown role ids are not locked/counted.
    let (rid2, sid2) = fx.approle("c11b", json!({})).await;
    let r = fx.login(&rid2, &sid2).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn c12_secret_id_num_uses() {
    let fx = Fx::new().await;
    let (rid, _) = fx.approle("c12", json!({})).await;
    let s = fx
        .root(
            "POST",
            "auth/approle/role/c12/secret-id",
            json!({"num_uses": 2}),
        )
        .await;
    let sid = s.str_at("/data/secret_id").expect("sid");
    assert_eq!(fx.login(&rid, &sid).await.status, 200);
    assert_eq!(fx.login(&rid, &sid).await.status, 200);
    let r = fx.login(&rid, &sid).await;
    assert_eq!(
        (r.status, r.json.clone()),
        (400, json!({"errors": ["invalid role or secret ID"]}))
    );
}

#[tokio::test]
async fn c13_secret_id_num_uses_above_role_limit() {
    let fx = Fx::new().await;
    fx.ok(
        "POST",
        "auth/approle/role/c13",
        json!({"secret_id_num_uses": 3, "secret_id_ttl": 60}),
    )
    .await;
    let r = fx
        .root(
            "POST",
            "auth/approle/role/c13/secret-id",
            json!({"num_uses": 4}),
        )
        .await;
    assert_eq!(
        (r.status, r.json.clone()),
        (
            400,
            json!({"errors": ["num_uses cannot be higher than the role's secret_id_num_uses"]})
        )
    );
    let r = fx
        .root(
            "POST",
            "auth/approle/role/c13/secret-id",
            json!({"ttl": 120}),
        )
        .await;
    assert_eq!(
        (r.status, r.json.clone()),
        (
            400,
            json!({"errors": ["ttl cannot be longer than the role's secret_id_ttl"]})
        )
    );
    let r = fx
        .root(
            "POST",
            "auth/approle/role/c13/secret-id",
            json!({"num_uses": -1}),
        )
        .await;
    assert_eq!(
        (r.status, r.json.clone()),
        (400, json!({"errors": ["num_uses cannot be negative"]}))
    );
}

#[tokio::test]
async fn c14_batch_token_role() {
    let fx = Fx::new().await;
    let (rid, sid) = fx
        .approle("c14", json!({"token_type": "batch", "token_ttl": 300}))
        .await;
    let r = fx.login(&rid, &sid).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["auth"]["renewable"], json!(false));
    assert_eq!(r.json["auth"]["accessor"], json!(""));
    assert_eq!(r.json["auth"]["token_type"], json!("batch"));
    assert!(r
        .str_at("/auth/client_token")
        .unwrap_or_default()
        .starts_with("hvb."));
}
