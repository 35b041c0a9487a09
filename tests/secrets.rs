//! Secrets at rest in the process and on disk:
//! - every secret sqlease holds is a `secrecy::SecretString`, which
//!   zeroizes its bytes when dropped: checked at compile time for the types
//!   that hold passwords and tokens, and at run time on a `SecretBox`;
//! - a file holding a secret that group or others can read is reported at
//!   startup (a warning naming the setting and the file, never its content);
//!   a 0600 file is not.
//!
//! The leak scan of logs (trace level), client errors, `Debug` output,
//! /metrics and /v1/sessions runs with the Vault scenarios in
//! tests/vault_proxy.rs.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use common::*;
use secrecy::SecretBox;
use sqlease::secret::{ExposeSecret, SecretString};
use zeroize::{Zeroize, ZeroizeOnDrop};

fn zeroized_on_drop<T: ZeroizeOnDrop + ?Sized>() {}

#[test]
fn secret_types_zeroize_on_drop() {
    // Compile-time: the type of every password, token and secret id.
    zeroized_on_drop::<SecretString>();
    zeroized_on_drop::<SecretBox<str>>();

    // Run time: dropping a SecretBox runs Zeroize on its content.
    static ZEROIZED: AtomicBool = AtomicBool::new(false);
    struct Probe(Vec<u8>);
    impl Zeroize for Probe {
        fn zeroize(&mut self) {
            self.0.zeroize();
            ZEROIZED.store(true, Ordering::SeqCst);
        }
    }
    let s = SecretBox::new(Box::new(Probe(b"hunter2".to_vec())));
    assert_eq!(s.expose_secret().0, b"hunter2");
    assert!(!ZEROIZED.load(Ordering::SeqCst));
    drop(s);
    assert!(
        ZEROIZED.load(Ordering::SeqCst),
        "SecretBox did not zeroize on drop"
    );

    // And a SecretString's Debug output never shows it.
    let pw = SecretString::from("s3cret-pw-123");
    assert!(!format!("{pw:?}").contains("s3cret"));
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn capture() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .with_writer(Capture(buf.clone()))
            .try_init()
            .expect("this test binary owns the global subscriber");
        buf
    })
}

fn secret_file(dir: &std::path::Path, name: &str, content: &str, mode: u32) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{content}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readable_secret_files_are_reported_at_startup() {
    let logs = capture();
    let dir = tempfile::tempdir().unwrap();
    let open_pw = secret_file(dir.path(), "app-pw", LOCAL_PASSWORD, 0o644);
    let closed_up = secret_file(dir.path(), "up-pw", UP_PASSWORD, 0o600);
    let group_admin = secret_file(dir.path(), "admin-token", "adm-token-9z8y7x", 0o640);
    let toml = config_toml(db(), "", "")
        .replace(
            &format!("password = \"{LOCAL_PASSWORD}\""),
            &format!("password = {{ file = \"{}\" }}", open_pw.display()),
        )
        .replace(
            &format!("password = \"{UP_PASSWORD}\""),
            &format!("password = {{ file = \"{}\" }}", closed_up.display()),
        );
    let toml = format!(
        "[admin]\nbind = \"127.0.0.1:0\"\ntoken = {{ file = \"{}\" }}\n{toml}",
        group_admin.display()
    );
    assert_eq!(toml.matches("{ file = ").count(), 3, "{toml}");
    let r = start_with(&toml).await;
    // It serves with the secrets read from the files.
    let mut c = connect(&r).await;
    let v: i64 = scalar(&mut c, "SELECT 1").await;
    assert_eq!(v, 1);
    c.disconnect().await.unwrap();
    r.shutdown(std::time::Duration::from_secs(2)).await;

    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("readable by group or others"))
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(warnings.iter().all(|l| l.contains("WARN")));
    assert!(warnings
        .iter()
        .any(|l| l.contains("listener.main.users.app.password")
            && l.contains(&open_pw.display().to_string())));
    assert!(warnings
        .iter()
        .any(|l| l.contains("admin.token") && l.contains(&group_admin.display().to_string())));
    let closed = closed_up.display().to_string();
    assert!(
        !warnings.iter().any(|l| l.contains(&closed)),
        "{warnings:#?}"
    );
    for secret in [LOCAL_PASSWORD, UP_PASSWORD, "adm-token-9z8y7x"] {
        assert!(!text.contains(secret), "a secret appears in the logs");
    }
}

#[test]
fn every_secret_file_setting_is_checked() {
    // The Vault token file (e.g. a Vault Agent sink), AppRole ids, TLS keys.
    let toml = r#"
[vault]
address = "http://127.0.0.1:1"
[vault.auth]
method = "token"
token = { file = "secrets/vault-token" }

[admin]
token = { file = "secrets/admin-token" }

[[listener]]
name = "l"
[[listener.users]]
name = "u"
password = { file = "secrets/u" }
[listener.tls]
mode = "optional"
cert_file = "secrets/cert.pem"
key_file = "secrets/key.pem"
[listener.upstream]
address = "127.0.0.1:3306"
credentials = "s"

[credentials.s]
type = "static"
username = "x"
password = { file = "secrets/s" }
"#;
    // The configuration reads the files: make them exist.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    for (name, content) in [
        ("vault-token", "hvs.not-a-real-token".to_string()),
        ("admin-token", "adm".into()),
        ("u", "pw".into()),
        ("s", "pw".into()),
        ("role-id", "r".into()),
        ("secret-id", "s".into()),
        ("cert.pem", ck.cert.pem()),
        ("key.pem", ck.signing_key.serialize_pem()),
    ] {
        std::fs::write(dir.path().join("secrets").join(name), content).unwrap();
    }
    let toml = toml.replace("\"secrets/", &format!("\"{d}/secrets/"));
    let cfg = sqlease::config::Config::from_toml(&toml).unwrap_or_else(|p| panic!("{p:?}"));
    let mut keys: Vec<String> = sqlease::app::secret_files(&cfg)
        .into_iter()
        .map(|(k, p)| format!("{k}={}", p.strip_prefix(&d).unwrap().display()))
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        vec![
            "admin.token=secrets/admin-token",
            "credentials.s.password=secrets/s",
            "listener.l.tls.key_file=secrets/key.pem",
            "listener.l.users.u.password=secrets/u",
            "vault.auth.token=secrets/vault-token",
        ]
    );
    let approle = toml.replace(
        &format!("method = \"token\"\ntoken = {{ file = \"{d}/secrets/vault-token\" }}"),
        &format!("method = \"approle\"\nrole_id = {{ file = \"{d}/secrets/role-id\" }}\nsecret_id = {{ file = \"{d}/secrets/secret-id\" }}"),
    );
    assert_ne!(approle, toml);
    let cfg = sqlease::config::Config::from_toml(&approle).unwrap_or_else(|p| panic!("{p:?}"));
    let keys: Vec<String> = sqlease::app::secret_files(&cfg)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert!(keys.contains(&"vault.auth.role_id".to_string()), "{keys:?}");
    assert!(
        keys.contains(&"vault.auth.secret_id".to_string()),
        "{keys:?}"
    );
}
