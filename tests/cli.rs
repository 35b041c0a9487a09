//! The `sqlease` binary: check-config, hash-password and run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn sqlease(args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(sqlease_bin());
    cmd.args(args)
        .env_remove("SQLEASE_CONFIG")
        .env_remove("SQLEASE_APP_PASSWORD")
        .env_remove("APP_LEGACY_DB_PASSWORD")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run sqlease");
    {
        use std::io::Write;
        let mut si = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            si.write_all(s.as_bytes()).unwrap();
        }
    }
    child.wait_with_output().unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const BROKEN: &str = r#"
[[listener]]
name = "app"
bind = "not-an-address"
bogus_key = 1
max_connections = 0

[[listener.users]]
name = "app"
password = ""

[[listener.users]]
name = "ops"

[listener.tls]
mode = "required"
colour = "blue"

[listener.upstream]
address = "nohostport"
credentials = "missing"

[credentials.legacy]
type = "static"
username = ""
password = "x"

[vault]
address = "http://127.0.0.1:8200"
adress = "typo"
[vault.auth]
method = "token"

[log]
level = "info"
colour = "yes"
"#;

#[test]
fn check_config_lists_every_problem_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "broken.toml", BROKEN);
    let out = sqlease(&["check-config", "--config", f.to_str().unwrap()], None);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let expected = [
        "listener[0].bogus_key: unknown key",
        "listener[0].tls.colour: unknown key",
        "vault.adress: unknown key",
        "log.colour: unknown key",
        "listener[0].bind: \"not-an-address\" is not an address",
        "listener[0].users[0].password: must not be empty",
        "listener[0].users[1]: set password",
        "listener[0].tls.cert_file: required",
        "listener[0].tls.key_file: required",
        "listener[0].max_connections: must be at least 1",
        "listener[0].upstream.address: \"nohostport\" is not host:port",
        "listener[0].upstream.credentials: no [credentials.missing] section",
        "credentials.legacy.username: must not be empty",
    ];
    for e in expected {
        assert!(
            err.lines()
                .any(|l| l.trim_start().starts_with(&format!("- {e}"))),
            "missing {e:?} in:\n{err}"
        );
    }
    assert!(
        err.contains(&format!("{} problem(s)", expected.len())),
        "unexpected extra problems:\n{err}"
    );
    // `run` refuses the same file before binding anything.
    let out = sqlease(&["run", "--config", f.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("listener[0].bind"));
}

#[test]
fn check_config_refuses_unknown_keys_in_tagged_sections() {
    // [credentials.*] and [vault.auth] are internally tagged enums, which
    // serde_ignored cannot see into; a typo there used to pass silently.
    let dir = tempfile::tempdir().unwrap();
    for (section, typo) in [
        (
            "[credentials.c]\ntype = \"static\"\nusername = \"u\"\npassword = \"p\"\npasword = \"p\"\n",
            "pasword",
        ),
        (
            "[credentials.c]\ntype = \"static\"\nusername = \"u\"\npassword = \"p\"\n[vault]\naddress = \"http://127.0.0.1:1\"\n[vault.auth]\nmethod = \"token\"\ntokn = \"t\"\n",
            "tokn",
        ),
    ] {
        let toml = format!(
            "[[listener]]\nname = \"a\"\nbind = \"127.0.0.1:3307\"\n[[listener.users]]\nname = \"app\"\npassword = \"pw\"\n[listener.upstream]\naddress = \"127.0.0.1:3306\"\ncredentials = \"c\"\n{section}"
        );
        let f = write(dir.path(), "typo.toml", &toml);
        let out = sqlease(&["check-config", "--config", f.to_str().unwrap()], None);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{typo}: {err}");
        assert!(
            err.contains(&format!("unknown field `{typo}`")) && err.contains("line "),
            "{err}"
        );
        // Without the typo the file is fine.
        let fixed = toml
            .lines()
            .filter(|l| !l.starts_with(typo))
            .collect::<Vec<_>>()
            .join("\n");
        let f = write(dir.path(), "fixed.toml", &fixed);
        let out = sqlease(&["check-config", "--config", f.to_str().unwrap()], None);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
}

#[test]
fn example_config_is_accepted() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sqlease.example.toml");
    let out = sqlease(
        &["check-config", "--config", example.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).ends_with(": OK\n"));
    // With --resolve-secrets the env vars it names must exist.
    let out = sqlease(
        &[
            "check-config",
            "--resolve-secrets",
            "--config",
            example.to_str().unwrap(),
        ],
        None,
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "listener[0].users[0].password: environment variable SQLEASE_APP_PASSWORD is not set"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "credentials.fixed.password: environment variable APP_LEGACY_DB_PASSWORD is not set"
        ),
        "{err}"
    );
    // Missing --config is a usage error.
    let out = sqlease(&["check-config"], None);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_password_output_verifies() {
    let out = sqlease(&["hash-password"], Some("s3cret-from-stdin\n"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let hash = text(&out.stdout).trim_end().to_string();
    assert!(hash.starts_with("$sqlease$1$"), "{hash}");
    assert!(!hash.contains("s3cret"));
    // Unsalted by necessity (the native and caching_sha2 scrambles need
    // SHA1(SHA1(pw)) and SHA256(SHA256(pw))): the native part is exactly
    // MariaDB's own PASSWORD() hash, and one trailing newline is ignored.
    let again = text(&sqlease(&["hash-password"], Some("s3cret-from-stdin")).stdout);
    assert_eq!(again.trim_end(), hash);
    let native = db().cli("SELECT PASSWORD('s3cret-from-stdin')").unwrap();
    let parts: Vec<&str> = hash.split('$').collect();
    assert_eq!(parts.len(), 5, "{hash}");
    assert_eq!(format!("*{}", parts[3].to_uppercase()), native.trim_end());
    assert_eq!(parts[4].len(), 64);
    // Empty input is refused.
    let out = sqlease(&["hash-password"], Some(""));
    assert_eq!(out.status.code(), Some(1));
    // The verifier logs the password in (and nothing else).
    let toml = config_toml(db(), "", "").replace(
        &format!("password = \"{LOCAL_PASSWORD}\""),
        &format!("password_hash = \"{hash}\""),
    );
    assert!(toml.contains("password_hash"));
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "hashed.toml", &toml);
    let out = sqlease(&["check-config", "--config", f.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r = start_with(&toml).await;
    let port = r.addr("main").unwrap().port();
    for (pw, ok) in [
        ("s3cret-from-stdin", true),
        (LOCAL_PASSWORD, false),
        ("s3cret-from-stdin\n", false),
    ] {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(port)
            .user(Some(LOCAL_USER))
            .pass(Some(pw));
        match mysql_async::Conn::new(opts).await {
            Ok(mut c) => {
                assert!(ok, "{pw:?} should be refused");
                let v: i64 = scalar(&mut c, "SELECT 5").await;
                assert_eq!(v, 5);
            }
            Err(mysql_async::Error::Server(e)) => {
                assert!(!ok, "{pw:?} refused: {e:?}");
                assert_eq!(e.code, 1045);
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    // And through the mariadb CLI (caching_sha2_password too).
    for auth in [
        "--default-auth=mysql_native_password",
        "--default-auth=caching_sha2_password",
    ] {
        let out = tokio::process::Command::new("mariadb")
            .args(["--no-defaults", "-h127.0.0.1", "--protocol=tcp", "-N", "-B"])
            .arg(format!("-P{port}"))
            .arg(format!("-u{LOCAL_USER}"))
            .arg("-ps3cret-from-stdin")
            .args([auth, "-e", "SELECT 'hashed-ok'"])
            .output()
            .await
            .unwrap();
        assert_eq!(
            text(&out.stdout),
            "hashed-ok\n",
            "{auth}: {}",
            text(&out.stderr)
        );
    }
}

/// Sends SIGTERM to a child we started.
fn terminate(child: &std::process::Child) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn run_serves_and_stops_on_sigterm() {
    let port = sqlease_testkit::mariadb::free_port().unwrap();
    let toml = config_toml(db(), "", "").replace(
        "bind = \"127.0.0.1:0\"",
        &format!("bind = \"127.0.0.1:{port}\""),
    );
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "run.toml", &toml);
    let mut child = Command::new(sqlease_bin())
        .args(["run", "--config", f.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the CLI gets an answer.
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-h127.0.0.1", "--protocol=tcp", "-N", "-B"])
            .arg(format!("-P{port}"))
            .arg(format!("-u{LOCAL_USER}"))
            .arg(format!("-p{LOCAL_PASSWORD}"))
            .args(["-e", "SELECT CONCAT('run', '-ok')"])
            .output()
            .unwrap();
        if out.status.success() {
            break text(&out.stdout);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("sqlease run never answered: {}", text(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(answer, "run-ok\n");
    terminate(&child);
    let t = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            assert_eq!(st.code(), Some(0), "{err}");
            assert!(err.contains("shutting down"), "{err}");
            assert!(
                !err.contains(LOCAL_PASSWORD) && !err.contains(UP_PASSWORD),
                "{err}"
            );
            break;
        }
        if t.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("sqlease did not stop within 15 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
