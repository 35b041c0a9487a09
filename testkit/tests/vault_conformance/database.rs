//! Checklist items 23–33: database engine.

use mysql_async::prelude::Queryable;
use serde_json::{json, Value};

use crate::common::*;

#[tokio::test]
async fn c23_mount_twice_is_already_in_use() {
    let fx = Fx::new().await;
    let r = fx
        .root("POST", "sys/mounts/db2", json!({"type": "database"}))
        .await;
    assert_eq!(r.status, 204);
    let r = fx
        .root("POST", "sys/mounts/database", json!({"type": "database"}))
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.errors()[0].contains("path is already in use at database/"),
        "{}",
        r.text
    );
}

#[tokio::test]
async fn c24_creds_lease_shape() {
    let fx = Fx::new().await;
    fx.role("readonly", json!({"default_ttl": "1h", "max_ttl": "24h"}))
        .await;
    let tok = fx.app_token("c24", "readonly", json!({})).await;
    let r = fx.creds("readonly", &tok).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let lease = r.str_at("/lease_id").expect("lease");
    let suffix = lease
        .strip_prefix("database/creds/readonly/")
        .expect("prefix");
    assert_eq!(suffix.len(), 24);
    assert!(suffix.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(r.json["renewable"], json!(true));
    assert_eq!(r.i64_at("/lease_duration"), Some(3600));
    assert!(r.str_at("/data/username").is_some() && r.str_at("/data/password").is_some());
}

#[tokio::test]
async fn c25_username_formats() {
    let fx = Fx::new().await;
    fx.role("readonly", json!({})).await;
    fx.role("longrolename-xyz", json!({})).await;
    let tok = fx.app_token("c25", "readonly", json!({})).await;
    let u = fx
        .creds("readonly", &tok)
        .await
        .str_at("/data/username")
        .expect("u");
    assert_eq!(u.len(), 32, "{u}");
    let rest = u.strip_prefix("v-approle-readonly-").expect("prefix");
    assert!(rest.chars().all(|c| c.is_ascii_alphanumeric()));
    let u = fx
        .creds("longrolename-xyz", fx.sv.root_token())
        .await
        .str_at("/data/username")
        .expect("u");
    assert!(u.starts_with("v-root-longrolena-"), "{u}");
    assert_eq!(u.len(), 32);
    // legacy plugin: ≤16, v-<first 4 of role>-
    fx.connection("legacy", "mysql-legacy-database-plugin", json!(["leg*"]))
        .await;
    fx.ok(
        "POST",
        "database/roles/legacyrole",
        json!({"db_name": "legacy", "creation_statements": [CREATE]}),
    )
    .await;
    let r = fx.creds("legacyrole", fx.sv.root_token()).await;
    let u = r.str_at("/data/username").expect("u");
    assert!(u.len() <= 16 && u.starts_with("v-lega-"), "{u}");
}

#[tokio::test]
async fn c26_password_format() {
    let fx = Fx::new().await;
    fx.role("pw", json!({})).await;
    let mut prefixes = std::collections::HashSet::new();
    for _ in 0..6 {
        let p = fx
            .creds("pw", fx.sv.root_token())
            .await
            .str_at("/data/password")
            .expect("p");
        assert_eq!(p.len(), 20);
        assert!(p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert!(p.chars().any(|c| c.is_ascii_lowercase()));
        assert!(p.chars().any(|c| c.is_ascii_uppercase()));
        assert!(p.chars().any(|c| c.is_ascii_digit()));
        assert!(p.contains('-'));
        prefixes.insert(p[..4].to_string());
    }
    assert!(prefixes.len() > 1 || !prefixes.contains("A1a-"));
}

#[tokio::test]
async fn c27_creds_exist_in_mysql() {
    let fx = Fx::new().await;
    fx.role("app", json!({"creation_statements": "CREATE USER '{{username}}'@'%' IDENTIFIED BY '{{password}}';GRANT SELECT ON mysql.* TO '{{name}}'@'%'"})).await;
    let tok = fx.app_token("c27", "app", json!({})).await;
    let r = fx.creds("app", &tok).await;
    let (u, p) = (
        r.str_at("/data/username").expect("u"),
        r.str_at("/data/password").expect("p"),
    );
    assert!(fx.user_exists(&u).await);
    assert!(fx.can_connect(&u, &p).await);
    assert!(!fx.can_connect(&u, "wrong-password").await);
}

#[tokio::test]
async fn c28_default_above_max_is_capped_with_warning() {
    let fx = Fx::new().await;
    fx.role("cap", json!({"default_ttl": 7200, "max_ttl": 3600}))
        .await;
    let r = fx.creds("cap", fx.sv.root_token()).await;
    assert_eq!(r.i64_at("/lease_duration"), Some(3600));
    assert_eq!(
        r.warnings(),
        vec!["TTL of \"2h\" exceeded the effective max_ttl of \"1h\"; TTL value is capped accordingly".to_string()]
    );
}

#[tokio::test]
async fn c29_zero_default_uses_system_default() {
    let fx = Fx::new().await;
    fx.role("zero", json!({})).await;
    let r = fx.creds("zero", fx.sv.root_token()).await;
    assert_eq!(r.i64_at("/lease_duration"), Some(2_764_800));
    // A tuned mount changes it.
    fx.ok(
        "POST",
        "sys/mounts/database/tune",
        json!({"default_lease_ttl": "1h", "max_lease_ttl": "2h"}),
    )
    .await;
    let r = fx.creds("zero", fx.sv.root_token()).await;
    assert_eq!(r.i64_at("/lease_duration"), Some(3600));
}

#[tokio::test]
async fn c30_unknown_and_disallowed_roles() {
    let fx = Fx::new().await;
    let r = fx.creds("ghost", fx.sv.root_token()).await;
    assert_eq!(
        (r.status, r.json.clone()),
        (400, json!({"errors": ["unknown role: ghost"]}))
    );
    fx.connection("narrow", "mysql-database-plugin", json!(["only-this"]))
        .await;
    fx.ok(
        "POST",
        "database/roles/other",
        json!({"db_name": "narrow", "creation_statements": [CREATE]}),
    )
    .await;
    let r = fx.creds("other", fx.sv.root_token()).await;
    assert_eq!(r.status, 500);
    assert!(
        r.errors()[0].contains("\"other\" is not an allowed role"),
        "{}",
        r.text
    );
    fx.connection("none", "mysql-database-plugin", json!([]))
        .await;
    fx.ok(
        "POST",
        "database/roles/r3",
        json!({"db_name": "none", "creation_statements": [CREATE]}),
    )
    .await;
    let r = fx.creds("r3", fx.sv.root_token()).await;
    assert_eq!(r.status, 500);
    assert!(r.errors()[0].contains("is not an allowed role"));
}

#[tokio::test]
async fn c31_post_creds_405_root_403_read_only() {
    let fx = Fx::new().await;
    fx.role("app", json!({})).await;
    let r = fx.root("POST", "database/creds/app", json!({})).await;
    assert_eq!(r.status, 405, "{}", r.text);
    assert!(r.errors()[0].contains("unsupported operation"));
    let tok = fx.app_token("c31", "app", json!({})).await;
    let r = fx
        .call("POST", "database/creds/app", Some(&tok), json!({}))
        .await;
    assert_eq!((r.status, r.errors()), (403, vec![DENIED.to_string()]));
}

#[tokio::test]
async fn c32_default_revocation_revokes_and_drops_at_percent_host() {
    let fx = Fx::new().await;
    fx.role("app", json!({})).await;
    let r = fx.creds("app", fx.sv.root_token()).await;
    let (lease, user) = (
        r.str_at("/lease_id").expect("l"),
        r.str_at("/data/username").expect("u"),
    );
    assert!(fx.user_exists(&user).await);
    let rv = fx
        .root("PUT", "sys/leases/revoke", json!({"lease_id": lease}))
        .await;
    assert_eq!(rv.status, 204);
    assert!(!fx.user_exists(&user).await);
    // A user created at another host is not matched by the default '%' statements.
    fx.role("localhost", json!({"creation_statements": ["CREATE USER '{{name}}'@'localhost' IDENTIFIED BY '{{password}}'"]})).await;
    let r = fx.creds("localhost", fx.sv.root_token()).await;
    let (lease, user) = (
        r.str_at("/lease_id").expect("l"),
        r.str_at("/data/username").expect("u"),
    );
    let rv = fx
        .root("PUT", "sys/leases/revoke", json!({"lease_id": lease}))
        .await;
    assert_eq!(rv.status, 400, "{}", rv.text);
    assert!(rv.errors()[0].starts_with("failed to revoke entry"));
    assert!(fx.user_exists(&user).await);
    let mut c = fx.db.admin_conn().await.expect("conn");
    c.query_drop(format!("DROP USER '{user}'@'localhost'"))
        .await
        .expect("cleanup");
    let _ = c.disconnect().await;
}

#[tokio::test]
async fn c33_static_creds_and_rotation() {
    let fx = Fx::new().await;
    let mut c = fx.db.admin_conn().await.expect("conn");
    c.query_drop("DROP USER IF EXISTS 'c33_static'@'%'")
        .await
        .expect("drop");
    c.query_drop("CREATE USER 'c33_static'@'%' IDENTIFIED BY 'initial-pw'")
        .await
        .expect("create");
    let _ = c.disconnect().await;
    fx.ok(
        "POST",
        "database/static-roles/c33",
        json!({"db_name": "mysql", "username": "c33_static", "rotation_period": "1h"}),
    )
    .await;
    let r = fx
        .root("GET", "database/static-creds/c33", Value::Null)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["lease_id"], json!(""));
    assert_eq!(r.json["lease_duration"], json!(0));
    assert_eq!(r.str_at("/data/username").as_deref(), Some("c33_static"));
    let p1 = r.str_at("/data/password").expect("pw");
    assert!(r
        .str_at("/data/last_vault_rotation")
        .expect("rot")
        .contains('T'));
    assert_eq!(r.i64_at("/data/rotation_period"), Some(3600));
    let ttl = r.i64_at("/data/ttl").expect("ttl");
    assert!(ttl <= 3600 && ttl > 3590);
    assert!(fx.can_connect("c33_static", &p1).await);
    assert!(!fx.can_connect("c33_static", "initial-pw").await);
    assert_eq!(
        fx.root("POST", "database/rotate-role/c33", json!({}))
            .await
            .status,
        204
    );
    let p2 = fx
        .root("GET", "database/static-creds/c33", Value::Null)
        .await
        .str_at("/data/password")
        .expect("pw");
    assert_ne!(p1, p2);
    assert!(fx.can_connect("c33_static", &p2).await);
}
