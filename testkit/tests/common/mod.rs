//! Shared fixture for the stand-in tests: a fresh stand-in per test, configured
//! over HTTP against the shared private MariaDB.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use serde_json::{json, Value};
use sqlease_testkit::mariadb::MariaDb;
use sqlease_testkit::vault::{ApiResponse, StandinOptions, VaultHttp, VaultStandin};

pub const ROOT: &str = "root-token-for-tests";
pub const CREATE: &str = "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}'; GRANT SELECT ON *.* TO '{{name}}'@'%'";

pub struct Fx {
    pub sv: VaultStandin,
    pub http: VaultHttp,
    pub db: &'static MariaDb,
}

impl Fx {
    /// Stand-in with `database/` mounted, `auth/approle` enabled and connection `mysql`
    /// (allowed_roles `*`) pointing at the shared MariaDB.
    pub async fn new() -> Fx {
        let db = MariaDb::shared();
        let sv = VaultStandin::start(StandinOptions {
            root_token: ROOT.into(),
            ..StandinOptions::default()
        })
        .expect("start stand-in");
        let http = sv.http();
        let fx = Fx { sv, http, db };
        fx.ok("POST", "sys/mounts/database", json!({"type": "database"}))
            .await;
        fx.ok("POST", "sys/auth/approle", json!({"type": "approle"}))
            .await;
        fx.connection("mysql", "mysql-database-plugin", json!(["*"]))
            .await;
        fx
    }

    pub async fn connection(&self, name: &str, plugin: &str, allowed: Value) {
        self.ok(
            "POST",
            &format!("database/config/{name}"),
            json!({
                "plugin_name": plugin,
                "connection_url": format!("{{{{username}}}}:{{{{password}}}}@tcp(127.0.0.1:{})/", self.db.port()),
                "username": self.db.admin_user(),
                "password": self.db.admin_password(),
                "allowed_roles": allowed,
            }),
        )
        .await;
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> ApiResponse {
        let b = (!body.is_null()).then_some(body);
        self.http
            .call(method, path, token, b.as_ref())
            .await
            .expect("http")
    }

    pub async fn root(&self, method: &str, path: &str, body: Value) -> ApiResponse {
        self.call(method, path, Some(ROOT), body).await
    }

    /// Root call that must succeed (2xx).
    pub async fn ok(&self, method: &str, path: &str, body: Value) -> ApiResponse {
        let r = self.root(method, path, body).await;
        assert!(r.status < 300, "{method} {path} -> {} {}", r.status, r.text);
        r
    }

    /// Dynamic role `name` on connection `mysql` with extra fields.
    pub async fn role(&self, name: &str, extra: Value) {
        let mut body = json!({"db_name": "mysql", "creation_statements": [CREATE]});
        if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
            b.extend(e);
        }
        self.ok("POST", &format!("database/roles/{name}"), body)
            .await;
    }

    pub async fn policy(&self, name: &str, text: &str) {
        self.ok(
            "PUT",
            &format!("sys/policies/acl/{name}"),
            json!({"policy": text}),
        )
        .await;
    }

    /// AppRole role `name` with `body`; returns (role_id, secret_id).
    pub async fn approle(&self, name: &str, body: Value) -> (String, String) {
        self.ok("POST", &format!("auth/approle/role/{name}"), body)
            .await;
        let rid = self
            .ok(
                "GET",
                &format!("auth/approle/role/{name}/role-id"),
                Value::Null,
            )
            .await;
        let sid = self
            .ok(
                "POST",
                &format!("auth/approle/role/{name}/secret-id"),
                json!({}),
            )
            .await;
        (
            rid.str_at("/data/role_id").expect("role_id"),
            sid.str_at("/data/secret_id").expect("secret_id"),
        )
    }

    pub async fn login(&self, role_id: &str, secret_id: &str) -> ApiResponse {
        self.call(
            "POST",
            "auth/approle/login",
            None,
            json!({"role_id": role_id, "secret_id": secret_id}),
        )
        .await
    }

    /// Policy granting `read` on database/creds/<db_role> (plus lease renew/revoke), an AppRole
    /// role with `extra` token settings, and a logged-in token.
    pub async fn app_token(&self, approle: &str, db_role: &str, extra: Value) -> String {
        let pol = format!("p-{approle}");
        self.policy(&pol, &sqlease_testkit::vault::minimal_policy(db_role))
            .await;
        let mut body = json!({"token_policies": [pol]});
        if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
            b.extend(e);
        }
        let (rid, sid) = self.approle(approle, body).await;
        let r = self.login(&rid, &sid).await;
        assert_eq!(r.status, 200, "{}", r.text);
        r.str_at("/auth/client_token").expect("client_token")
    }

    pub async fn creds(&self, role: &str, token: &str) -> ApiResponse {
        self.call(
            "GET",
            &format!("database/creds/{role}"),
            Some(token),
            Value::Null,
        )
        .await
    }

    pub async fn user_exists(&self, user: &str) -> bool {
        let mut c = self.db.admin_conn().await.expect("admin conn");
        let n: Option<i64> = c
            .exec_first("SELECT COUNT(*) FROM mysql.user WHERE User = ?", (user,))
            .await
            .expect("query");
        let _ = c.disconnect().await;
        n.unwrap_or(0) > 0
    }

    pub async fn count_users_like(&self, prefix: &str) -> i64 {
        let mut c = self.db.admin_conn().await.expect("admin conn");
        let n: Option<i64> = c
            .exec_first(
                "SELECT COUNT(*) FROM mysql.user WHERE User LIKE ?",
                (format!("{prefix}%"),),
            )
            .await
            .expect("query");
        let _ = c.disconnect().await;
        n.unwrap_or(0)
    }

    pub async fn can_connect(&self, user: &str, pass: &str) -> bool {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(self.db.port())
            .user(Some(user))
            .pass(Some(pass))
            .prefer_socket(false);
        match mysql_async::Conn::new(opts).await {
            Ok(mut c) => {
                let ok = c.query_drop("SELECT 1").await.is_ok();
                let _ = c.disconnect().await;
                ok
            }
            Err(_) => false,
        }
    }

    /// Waits up to `secs` for `cond` to become true.
    pub async fn eventually<F, Fut>(&self, secs: u64, mut cond: F) -> bool
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let end = Instant::now() + Duration::from_secs(secs);
        loop {
            if cond().await {
                return true;
            }
            if Instant::now() > end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Keys every 2xx JSON envelope must carry.
pub fn assert_envelope(r: &ApiResponse) {
    for k in [
        "request_id",
        "lease_id",
        "renewable",
        "lease_duration",
        "data",
        "wrap_info",
        "warnings",
        "auth",
    ] {
        assert!(r.json.get(k).is_some(), "missing {k} in {}", r.text);
    }
    assert!(r.json["lease_id"].is_string());
    assert!(r.json["renewable"].is_boolean());
    assert!(r.json["lease_duration"].is_i64());
}

pub const INVALID_TOKEN: &str = "2 errors occurred:\n\t* permission denied\n\t* invalid token\n\n";
pub const DENIED: &str = "1 error occurred:\n\t* permission denied\n\n";
