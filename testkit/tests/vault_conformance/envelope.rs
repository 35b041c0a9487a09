//! Checklist items 1–7: envelope and errors.

use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn c1_success_envelope_has_all_keys() {
    let fx = Fx::new().await;
    fx.role("app", json!({})).await;
    let tok = fx.app_token("c1", "app", json!({})).await;
    let responses = vec![
        fx.creds("app", &tok).await,
        fx.call("GET", "auth/token/lookup-self", Some(&tok), Value::Null)
            .await,
        fx.root("GET", "auth/approle/role/c1/role-id", Value::Null)
            .await,
        fx.root("GET", "database/roles/app", Value::Null).await,
        fx.call("POST", "auth/token/renew-self", Some(&tok), json!({}))
            .await,
    ];
    for r in &responses {
        assert_eq!(r.status, 200, "{}", r.text);
        assert_envelope(r);
    }
}

#[tokio::test]
async fn c2_error_envelope_and_404_empty_list() {
    let fx = Fx::new().await;
    for path in [
        "database/roles/nope",
        "database/config/nope",
        "auth/approle/role/nope",
    ] {
        let r = fx.root("GET", path, Value::Null).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text);
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        assert_eq!(r.json, json!({"errors": []}), "{path}");
    }
    let r = fx
        .call("GET", "auth/token/lookup-self", Some("bogus"), Value::Null)
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    assert!(r.json["errors"].is_array());
}

#[tokio::test]
async fn c3_204_without_warnings_200_with_warnings() {
    let fx = Fx::new().await;
    let r = fx
        .root(
            "POST",
            "database/roles/c3",
            json!({"db_name": "mysql", "creation_statements": [CREATE]}),
        )
        .await;
    assert_eq!(r.status, 204);
    assert!(r.text.is_empty());
    // Same write with a literal password in the URL carries a warning → 200 + envelope.
    let r = fx
        .root(
            "POST",
            "database/config/literal",
            json!({
                "plugin_name": "mysql-database-plugin",
                "connection_url": format!("{}:{}@tcp(127.0.0.1:{})/", fx.db.admin_user(), fx.db.admin_password(), fx.db.port()),
                "allowed_roles": "*",
            }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_envelope(&r);
    assert!(r.warnings()[0].starts_with("Password found in connection_url"));
}

#[tokio::test]
async fn c4_unknown_expired_revoked_token_is_invalid_token() {
    let fx = Fx::new().await;
    fx.role("app", json!({})).await;
    let r = fx
        .call(
            "GET",
            "auth/token/lookup-self",
            Some("hvs.nope"),
            Value::Null,
        )
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (403, vec![INVALID_TOKEN.to_string()])
    );
    let r = fx.creds("app", "hvs.nope").await;
    assert_eq!(
        (r.status, r.errors()),
        (403, vec![INVALID_TOKEN.to_string()])
    );
    // revoked
    let tok = fx
        .app_token(
            "c4",
            "app",
            json!({"token_ttl": "1s", "token_max_ttl": "1s"}),
        )
        .await;
    let tok2 = {
        let (rid, sid) = fx.approle("c4b", json!({})).await;
        fx.login(&rid, &sid)
            .await
            .str_at("/auth/client_token")
            .expect("tok")
    };
    let r = fx
        .call("POST", "auth/token/revoke-self", Some(&tok2), json!({}))
        .await;
    assert_eq!(r.status, 204);
    let r = fx
        .call("GET", "auth/token/lookup-self", Some(&tok2), Value::Null)
        .await;
    assert_eq!(
        (r.status, r.errors()),
        (403, vec![INVALID_TOKEN.to_string()])
    );
    // expired
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let r = fx.creds("app", &tok).await;
    assert_eq!(
        (r.status, r.errors()),
        (403, vec![INVALID_TOKEN.to_string()])
    );
}

#[tokio::test]
async fn c5_policy_denial_is_plain_permission_denied() {
    let fx = Fx::new().await;
    fx.role("app", json!({})).await;
    fx.role("other", json!({})).await;
    let tok = fx.app_token("c5", "other", json!({})).await;
    let r = fx.creds("app", &tok).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.errors(), vec![DENIED.to_string()]);
    assert!(!r.text.contains("invalid token"));
}

#[tokio::test]
async fn c6_bearer_header_accepted() {
    let fx = Fx::new().await;
    fx.role("app", json!({})).await;
    let tok = fx.app_token("c6", "app", json!({})).await;
    let bearer = format!("Bearer {tok}");
    let r = fx
        .http
        .call_with(
            "GET",
            "auth/token/lookup-self",
            None,
            None,
            &[("Authorization", &bearer)],
        )
        .await
        .expect("http");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.str_at("/data/display_name").as_deref(), Some("approle"));
    let r = fx
        .http
        .call_with(
            "GET",
            "database/creds/app",
            None,
            None,
            &[("Authorization", &bearer)],
        )
        .await
        .expect("http");
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn c7_unknown_body_parameters_never_error() {
    let fx = Fx::new().await;
    let r = fx
        .root(
            "POST",
            "database/roles/c7",
            json!({"db_name": "mysql", "creation_statements": [CREATE], "bogus": 1}),
        )
        .await;
    assert_eq!(r.status, 204);
    let (rid, sid) = fx.approle("c7", json!({"zzz": true})).await;
    let r = fx
        .root(
            "POST",
            "auth/approle/role/c7/secret-id",
            json!({"bogus": "x", "alpha": 1}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r
        .warnings()
        .contains(&"Endpoint ignored these unrecognized parameters: [alpha bogus]".to_string()));
    let r = fx
        .call(
            "POST",
            "auth/approle/login",
            None,
            json!({"role_id": rid, "secret_id": sid, "extra": 1}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}
