//! Runs config/vault-init.sh against the Vault stand-in and the private MariaDB,
//! then logs in with the printed RoleID/SecretID and checks that the issued
//! credentials work in MariaDB. Needs `curl` (the test command installs it).

mod common;

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

use common::*;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/vault-init.sh")
}

fn run_script(fx: &Fx, extra: &[(&str, &str)]) -> std::process::Output {
    assert!(
        Command::new("curl").arg("--version").output().is_ok(),
        "curl is required by config/vault-init.sh; install it (apt-get install -y curl)"
    );
    let mut cmd = Command::new("bash");
    cmd.arg(script())
        .env("VAULT_ADDR", fx.sv.url())
        .env("VAULT_TOKEN", ROOT)
        .env("MYSQL_HOST", "127.0.0.1")
        .env("MYSQL_PORT", fx.db.port().to_string())
        .env("MYSQL_ADMIN_USER", fx.db.admin_user())
        .env("MYSQL_ADMIN_PASSWORD", fx.db.admin_password());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.output().expect("run vault-init.sh")
}

fn value(out: &str, key: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_string)
}

#[tokio::test]
async fn vault_init_script_configures_a_working_setup() {
    // Fx::new already mounts database/ and approle/: the script must accept "already in use".
    let fx = Fx::new().await;
    let out = run_script(
        &fx,
        &[
            ("SQLEASE_DEFAULT_TTL", "10m"),
            ("SQLEASE_MAX_TTL", "2h"),
            ("SQLEASE_TOKEN_TTL", "15m"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let role_id = value(&stdout, "VLT_ROLE_ID").expect("VLT_ROLE_ID line");
    let secret_id = value(&stdout, "VLT_SECRET_ID").expect("VLT_SECRET_ID line");

    let login = fx.login(&role_id, &secret_id).await;
    assert_eq!(login.status, 200, "{}", login.text);
    assert_eq!(login.i64_at("/auth/lease_duration"), Some(900));
    assert_eq!(
        login.json["auth"]["policies"],
        json!(["default", "sqlease"])
    );
    let tok = login.str_at("/auth/client_token").expect("token");

    let creds = fx.creds("sqlease", &tok).await;
    assert_eq!(creds.status, 200, "{}", creds.text);
    assert_eq!(creds.i64_at("/lease_duration"), Some(600));
    let (u, p) = (
        creds.str_at("/data/username").expect("u"),
        creds.str_at("/data/password").expect("p"),
    );
    assert!(u.starts_with("v-approle-sqlease-"), "{u}");
    assert!(fx.can_connect(&u, &p).await);

    // The minimal policy: renew and revoke allowed, other roles denied.
    let lease = creds.str_at("/lease_id").expect("lease");
    let r = fx
        .call(
            "PUT",
            "sys/leases/renew",
            Some(&tok),
            json!({"lease_id": lease, "increment": 300}),
        )
        .await;
    assert_eq!(r.i64_at("/lease_duration"), Some(300));
    fx.role("other", json!({})).await;
    assert_eq!(fx.creds("other", &tok).await.status, 403);
    let r = fx
        .call(
            "PUT",
            "sys/leases/revoke",
            Some(&tok),
            json!({"lease_id": lease}),
        )
        .await;
    assert_eq!(r.status, 204);
    assert!(!fx.user_exists(&u).await);
    let rl = fx.root("GET", "database/roles/sqlease", Value::Null).await;
    assert_eq!(rl.i64_at("/data/max_ttl"), Some(7200));
}

#[tokio::test]
async fn vault_init_script_writes_files_and_is_rerunnable() {
    let fx = Fx::new().await;
    let dir = tempfile::tempdir().expect("tmp");
    let rid_file = dir.path().join("role_id");
    let sid_file = dir.path().join("secret_id");
    for _ in 0..2 {
        let out = run_script(
            &fx,
            &[
                ("SQLEASE_ROLE_ID_FILE", rid_file.to_str().expect("utf8")),
                ("SQLEASE_SECRET_ID_FILE", sid_file.to_str().expect("utf8")),
                ("SQLEASE_DB_ROLE", "files"),
            ],
        );
        assert!(
            out.status.success(),
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            value(&stdout, "VLT_SECRET_ID").is_none(),
            "secret printed despite file mode"
        );
        assert!(value(&stdout, "VLT_SECRET_ID_FILE").is_some());
    }
    let rid = std::fs::read_to_string(&rid_file)
        .expect("rid")
        .trim()
        .to_string();
    let sid = std::fs::read_to_string(&sid_file)
        .expect("sid")
        .trim()
        .to_string();
    let tok = fx
        .login(&rid, &sid)
        .await
        .str_at("/auth/client_token")
        .expect("token");
    assert_eq!(fx.creds("files", &tok).await.status, 200);
    // A failing call makes the script exit non-zero.
    let out = run_script(&fx, &[("VAULT_TOKEN", "bogus")]);
    assert!(!out.status.success());
}
