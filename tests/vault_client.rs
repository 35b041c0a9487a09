//! The Vault client and the lease manager against the Vault stand-in and
//! a private MariaDB: real logins, real CREATE USER / DROP USER.

use std::time::Duration;

use sqlease::config::{RotationConfig, VaultAuthConfig, VaultConfig, VaultRoleKind};
use sqlease::credentials::{CredentialHandle, SourceEvent};
use sqlease::lease::{start_vault_source, VaultSource};
use sqlease::secret::{ExposeSecret, SecretSource, SecretString};
use sqlease::vault::{Authenticator, ClientSettings, VaultClient, VaultError};
use sqlease_testkit::mariadb::MariaDb;
use sqlease_testkit::vault::{MysqlProvision, Provisioned, StandinOptions, VaultStandin};

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_string())
}

fn provision(ttl: &str, max: &str, token_ttl: &str, token_max: &str) -> MysqlProvision {
    let db = MariaDb::shared();
    MysqlProvision {
        mysql_port: db.port(),
        admin_user: db.admin_user().into(),
        admin_password: db.admin_password().into(),
        default_ttl: ttl.into(),
        max_ttl: max.into(),
        token_ttl: token_ttl.into(),
        token_max_ttl: token_max.into(),
        ..MysqlProvision::default()
    }
}

async fn standin(p: &MysqlProvision) -> (VaultStandin, Provisioned) {
    // The test kit's provisioning client builds a default reqwest client;
    // with reqwest's `rustls-no-provider` feature unified in by sqlease it
    // needs a process-wide provider (sqlease itself passes ring explicitly).
    let _ = rustls::crypto::ring::default_provider().install_default();
    if std::env::var_os("SQLEASE_TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("sqlease=debug")
            .with_test_writer()
            .try_init();
    }
    let v = VaultStandin::start(StandinOptions::default()).expect("start the Vault stand-in");
    let creds = v.provision_mysql(p).await.expect("provision the stand-in");
    (v, creds)
}

fn vault_config(v: &VaultStandin, role_id: &str, secret_id: &str) -> VaultConfig {
    VaultConfig {
        address: Some(v.url()),
        ca_file: None,
        namespace: None,
        request_timeout: Duration::from_secs(2),
        auth: VaultAuthConfig::Approle {
            mount: "approle".into(),
            role_id: Some(SecretSource::Inline(secret(role_id))),
            secret_id: Some(SecretSource::Inline(secret(secret_id))),
            secret_id_wrapped: false,
        },
        revoke_token_on_shutdown: true,
    }
}

fn user_exists(user: &str) -> bool {
    let out = MariaDb::shared()
        .cli(&format!(
            "SELECT COUNT(*) FROM mysql.user WHERE User = '{user}'"
        ))
        .expect("query mysql.user");
    out.trim() == "1"
}

async fn start(
    v: &VaultStandin,
    c: &Provisioned,
    lead: Duration,
) -> (CredentialHandle, VaultSource) {
    let rotation = RotationConfig {
        lead_time: lead,
        ..RotationConfig::default()
    };
    start_vault_source(
        "main",
        &vault_config(v, &c.role_id, &c.secret_id),
        "app",
        VaultRoleKind::Dynamic,
        "database",
        &rotation,
    )
    .await
    .expect("start the Vault source")
}

/// Polls `f` every 100 ms for up to `secs`.
async fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn current_id(h: &CredentialHandle) -> u64 {
    h.current().map_or(0, |g| g.id)
}

#[tokio::test]
async fn client_endpoints_against_the_standin() {
    let (v, c) = standin(&provision("1h", "24h", "1h", "24h")).await;
    let client = VaultClient::new(&ClientSettings {
        address: v.url(),
        ca_file: None,
        namespace: Some("root".into()),
        request_timeout: Duration::from_secs(2),
    })
    .unwrap();
    let grant = client
        .approle_login("approle", &secret(&c.role_id), &secret(&c.secret_id))
        .await
        .unwrap();
    assert!(grant.renewable);
    assert_eq!(grant.ttl, Some(Duration::from_secs(3600)));
    let token = grant.token;

    let info = client.token_lookup_self(&token).await.unwrap();
    assert_eq!(info.display_name, "approle");
    assert!(info.ttl > 3500);

    let creds = client
        .database_creds(&token, "database", "app")
        .await
        .unwrap();
    assert!(creds.lease_id.starts_with("database/creds/app/"));
    assert_eq!(creds.lease_duration, Duration::from_secs(3600));
    assert!(
        user_exists(&creds.username),
        "{} not created",
        creds.username
    );
    assert!(!format!("{creds:?}").contains(creds.password.expose_secret()));

    let r = client
        .lease_renew(&token, &creds.lease_id, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(r.lease_id, creds.lease_id);
    assert_eq!(r.lease_duration, Duration::from_secs(600));
    assert!(!r.capped(Duration::from_secs(600)));
    let l = client.lease_lookup(&token, &creds.lease_id).await.unwrap();
    assert_eq!(l.id, creds.lease_id);

    let renewed = client
        .token_renew_self(&token, Some(Duration::from_secs(600)))
        .await
        .unwrap();
    assert_eq!(renewed.ttl, Some(Duration::from_secs(600)));

    client.lease_revoke(&token, &creds.lease_id).await.unwrap();
    assert!(!user_exists(&creds.username), "user not dropped on revoke");
    let e = client
        .lease_renew(&token, &creds.lease_id, Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(e.is_lease_gone() && !e.retryable(), "{e:?}");

    client.token_revoke_self(&token).await.unwrap();
    let e = client.token_lookup_self(&token).await.unwrap_err();
    assert!(e.is_invalid_token(), "{e:?}");

    let e = client
        .approle_login("approle", &secret(&c.role_id), &secret("wrong"))
        .await
        .unwrap_err();
    assert!(e.is_invalid_login() && !e.retryable(), "{e:?}");
    assert!(!e.to_string().contains("wrong"));

    v.seal();
    let e = client.token_lookup_self(&secret("x")).await.unwrap_err();
    assert!(e.is_sealed() && e.retryable(), "{e:?}");
}

#[tokio::test]
async fn wrong_secret_id_is_a_clear_fatal_error() {
    let (v, c) = standin(&provision("1h", "24h", "1h", "24h")).await;
    let cfg = vault_config(&v, &c.role_id, "not-the-secret-id");
    let e = start_vault_source(
        "main",
        &cfg,
        "app",
        VaultRoleKind::Dynamic,
        "database",
        &RotationConfig::default(),
    )
    .await
    .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, VaultError::LoginRejected { .. }), "{e:?}");
    assert!(text.contains("vault.auth.secret_id"), "{text}");
    assert!(text.contains("was rejected by Vault"), "{text}");
    assert!(!text.contains("not-the-secret-id"), "{text}");
    // The authenticator alone says the same.
    let a = Authenticator::new(&cfg.auth);
    let client = VaultClient::new(&ClientSettings::from_config(&cfg).unwrap()).unwrap();
    assert!(a.login(&client).await.is_err());
}

#[tokio::test]
async fn capped_lease_rotates_and_old_user_is_dropped() {
    // 3 s leases that cannot live past 12 s; the 60 s lead time is clamped.
    let (v, c) = standin(&provision("3s", "12s", "1h", "24h")).await;
    let (h, src) = start(&v, &c, Duration::from_secs(60)).await;
    let g1 = h.current().expect("generation 1 published at start");
    assert_eq!(g1.id, 1);
    assert!(user_exists(&g1.username));
    // Keep one "connection" on generation 1 until generation 2 exists.
    let guard = g1.attach();
    eventually(15, "generation 2", || current_id(&h) >= 2).await;
    assert!(g1.is_retired());
    let g2 = h.current().unwrap();
    assert!(user_exists(&g2.username));
    assert!(user_exists(&g1.username), "revoked while still in use");
    drop(guard);
    let u1 = g1.username.clone();
    eventually(5, "generation 1 revoked once unused", || !user_exists(&u1)).await;
    let s = src.stats().snapshot();
    assert!(
        s.renewals >= 1 && s.revocations >= 1 && s.generations >= 2,
        "{s:?}"
    );
    assert!(s.ready);
    src.shutdown(true).await;
    assert!(v.live_leases().is_empty(), "{:?}", v.live_leases());
    assert!(!user_exists(&g2.username));
    assert_eq!(v.live_tokens(), 1, "only the root token should remain");
}

#[tokio::test]
async fn token_revoked_out_of_band_is_recovered() {
    let (v, c) = standin(&provision("1h", "24h", "1h", "24h")).await;
    let (h, src) = start(&v, &c, Duration::from_secs(60)).await;
    let g1 = h.current().unwrap();
    let leases = v.live_leases();
    assert_eq!(leases.len(), 1);
    let accessor = v.lease_info(&leases[0]).unwrap().token_accessor;
    assert!(v.revoke_token_out_of_band(&accessor));
    let u1 = g1.username.clone();
    eventually(5, "leases of the revoked token dropped", || {
        !user_exists(&u1)
    })
    .await;
    // A session finds out first: MySQL refuses generation 1.
    h.report(SourceEvent::AuthRejected { generation: g1.id });
    eventually(5, "a new generation", || current_id(&h) >= 2).await;
    let g2 = h.current().unwrap();
    assert!(user_exists(&g2.username));
    assert_eq!(src.stats().snapshot().logins, 2);
    src.shutdown(true).await;
}

#[tokio::test]
async fn token_max_ttl_relogin_before_token_death() {
    // The token lives 9 s at most; leases would live an hour.
    let (v, c) = standin(&provision("1h", "24h", "3s", "9s")).await;
    let (h, src) = start(&v, &c, Duration::from_secs(60)).await;
    let g1 = h.current().unwrap();
    let u1 = g1.username.clone();
    drop(g1);
    eventually(12, "re-login and generation 2", || {
        src.stats().snapshot().logins >= 2 && current_id(&h) >= 2
    })
    .await;
    let g2 = h.current().unwrap();
    // Generation 2 was taken under the new token: it survives the old token's death.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        user_exists(&g2.username),
        "generation 2 died with the old token"
    );
    assert!(!user_exists(&u1), "generation 1 not revoked");
    assert!(h
        .current()
        .is_some_and(|g| !g.expired(std::time::Instant::now())));
    src.shutdown(true).await;
}

#[tokio::test]
async fn vault_outage_keeps_current_generation_then_recovers() {
    let (v, c) = standin(&provision("6s", "1h", "1h", "24h")).await;
    let (h, src) = start(&v, &c, Duration::from_secs(60)).await;
    let g1 = h.current().unwrap();
    // Down for 3 s across the first lease renewal (~3.6-4 s after issue).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    v.set_down(true);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(current_id(&h), 1, "generation changed while Vault was down");
    let failures = src.stats().snapshot().failures;
    assert!(failures >= 1, "no renewal attempted while down");
    v.set_down(false);
    eventually(5, "renewal after Vault is back", || {
        src.stats().snapshot().renewals >= 1
    })
    .await;
    assert_eq!(current_id(&h), 1);
    assert!(user_exists(&g1.username));
    // Sealed is retried the same way.
    v.seal();
    tokio::time::sleep(Duration::from_secs(2)).await;
    v.unseal();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(current_id(&h), 1);
    assert!(user_exists(&g1.username), "lease lost after a short seal");
    src.shutdown(true).await;
    assert!(!user_exists(&g1.username));
}

#[tokio::test]
async fn vault_down_at_start_then_up() {
    let (v, c) = standin(&provision("1h", "24h", "1h", "24h")).await;
    v.set_down(true);
    let (h, src) = start(&v, &c, Duration::from_secs(60)).await;
    assert!(h.current().is_none());
    assert!(h.status().contains("Vault"), "{}", h.status());
    v.set_down(false);
    eventually(10, "generation after Vault came up", || current_id(&h) == 1).await;
    src.shutdown(true).await;
}

/// Logs in to MariaDB with these credentials.
async fn can_login(user: &str, password: &str) -> bool {
    let db = MariaDb::shared();
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(db.port())
        .user(Some(user))
        .pass(Some(password));
    match mysql_async::Conn::new(opts).await {
        Ok(c) => {
            let _ = c.disconnect().await;
            true
        }
        Err(_) => false,
    }
}

#[tokio::test]
async fn static_role_publishes_a_generation_per_rotation() {
    let p = provision("1h", "24h", "1h", "24h");
    let (v, c) = standin(&p).await;
    let db = MariaDb::shared();
    db.cli("CREATE USER IF NOT EXISTS 'sqlease_static_t'@'%' IDENTIFIED BY 'initial-pw'")
        .unwrap();
    let http = v.http();
    let root = Some(v.root_token());
    let call = |m: &'static str, path: &'static str, body: serde_json::Value| {
        let http = http.clone();
        async move {
            let r = http.call(m, path, root, Some(&body)).await.unwrap();
            assert!(r.status < 400, "{m} {path}: {:?}", r.errors());
        }
    };
    call(
        "POST",
        "database/config/mysql",
        serde_json::json!({
            "plugin_name": "mysql-database-plugin",
            "connection_url": format!("{{{{username}}}}:{{{{password}}}}@tcp(127.0.0.1:{})/", db.port()),
            "username": db.admin_user(), "password": db.admin_password(),
            "allowed_roles": ["app", "app_static"],
        }),
    )
    .await;
    call(
        "POST",
        "database/static-roles/app_static",
        serde_json::json!({"db_name": "mysql", "username": "sqlease_static_t", "rotation_period": "5s"}),
    )
    .await;
    let policy = format!(
        "{}path \"database/static-creds/app_static\" {{\n  capabilities = [\"read\"]\n}}\n",
        sqlease_testkit::vault::minimal_policy("app")
    );
    call(
        "PUT",
        "sys/policies/acl/sqlease",
        serde_json::json!({ "policy": policy }),
    )
    .await;

    let (h, src) = start_vault_source(
        "main",
        &vault_config(&v, &c.role_id, &c.secret_id),
        "app_static",
        VaultRoleKind::Static,
        "database",
        &RotationConfig::default(),
    )
    .await
    .expect("start the static source");
    let g1 = h.current().expect("generation 1");
    assert_eq!(g1.username, "sqlease_static_t");
    assert!(
        g1.deadline().is_some(),
        "static generations end at the rotation"
    );
    assert!(can_login(&g1.username, g1.password().expose_secret()).await);
    eventually(12, "generation after Vault rotated the password", || {
        current_id(&h) >= 2
    })
    .await;
    let g2 = h.current().unwrap();
    assert_ne!(g1.password().expose_secret(), g2.password().expose_secret());
    assert!(can_login(&g2.username, g2.password().expose_secret()).await);
    // Static users are never revoked: shutdown leaves the user in place.
    src.shutdown(true).await;
    assert!(user_exists("sqlease_static_t"));
}
