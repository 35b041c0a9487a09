//! Deployment files: docker-compose.yml parses, names only files that exist
//! (build contexts, Dockerfiles, mounted files, COPY sources), its sqlease
//! configuration passes `sqlease check-config`, and so do the Kubernetes
//! example's and the systemd unit's. No Docker engine is needed.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compose() -> Value {
    let text = std::fs::read_to_string(root().join("docker-compose.yml")).unwrap();
    serde_yaml::from_str(&text).expect("docker-compose.yml parses")
}

fn services(c: &Value) -> &serde_yaml::Mapping {
    c["services"].as_mapping().expect("services mapping")
}

fn check_config(file: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_sqlease"))
        .args(["check-config", "--config"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} fails check-config:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The COPY / ADD sources of a Dockerfile (stages excluded) exist in `context`.
fn check_dockerfile(dockerfile: &Path, context: &Path) -> usize {
    let text = std::fs::read_to_string(dockerfile)
        .unwrap_or_else(|e| panic!("{}: {e}", dockerfile.display()));
    let mut checked = 0;
    for line in text.lines().map(str::trim) {
        let Some(rest) = line
            .strip_prefix("COPY ")
            .or_else(|| line.strip_prefix("ADD "))
        else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        if words.iter().any(|w| w.starts_with("--from")) {
            continue;
        }
        let args: Vec<&str> = words.into_iter().filter(|w| !w.starts_with("--")).collect();
        assert!(args.len() >= 2, "{line}");
        for src in &args[..args.len() - 1] {
            let p = context.join(src);
            assert!(
                p.exists(),
                "{}: COPY source {src} does not exist",
                dockerfile.display()
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn compose_file_names_only_existing_files() {
    let c = compose();
    let svcs = services(&c);
    for want in ["mysql", "vault", "vault-init", "sqlease", "app"] {
        assert!(svcs.contains_key(want), "service {want} missing");
    }
    assert_eq!(c["services"]["mysql"]["image"], "mysql:8.4");
    let vault_cmd = format!("{:?}", c["services"]["vault"]["command"]);
    assert!(vault_cmd.contains("-dev"), "{vault_cmd}");
    let named_volumes = c["volumes"].as_mapping().cloned().unwrap_or_default();
    let mut builds = 0;
    let mut mounts = 0;
    for (name, svc) in svcs {
        let name = name.as_str().unwrap();
        if let Some(b) = svc.get("build") {
            let (ctx, dockerfile) = match b {
                Value::String(s) => (s.clone(), "Dockerfile".to_string()),
                Value::Mapping(m) => (
                    m.get("context")
                        .and_then(Value::as_str)
                        .unwrap_or(".")
                        .to_string(),
                    m.get("dockerfile")
                        .and_then(Value::as_str)
                        .unwrap_or("Dockerfile")
                        .to_string(),
                ),
                other => panic!("{name}: build is {other:?}"),
            };
            let ctx = root().join(ctx);
            assert!(
                ctx.is_dir(),
                "{name}: build context {} missing",
                ctx.display()
            );
            let df = ctx.join(&dockerfile);
            assert!(df.is_file(), "{name}: {} missing", df.display());
            assert!(check_dockerfile(&df, &ctx) > 0, "{name}: no COPY checked");
            builds += 1;
        }
        for v in svc
            .get("volumes")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let spec = v.as_str().expect("short volume syntax");
            let src = spec.split(':').next().unwrap();
            if src.starts_with("./") || src.starts_with('/') {
                let p = root().join(src);
                assert!(p.exists(), "{name}: mounted {src} does not exist");
                mounts += 1;
            } else {
                assert!(
                    named_volumes.contains_key(src),
                    "{name}: volume {src} not declared"
                );
            }
        }
        for f in svc
            .get("env_file")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let p = root().join(f.as_str().unwrap());
            assert!(p.is_file(), "{name}: env_file {} missing", p.display());
        }
        if let Some(deps) = svc.get("depends_on").and_then(Value::as_mapping) {
            for d in deps.keys() {
                assert!(svcs.contains_key(d), "{name} depends on unknown {d:?}");
            }
        }
    }
    assert_eq!(builds, 2, "sqlease and the demo app are built here");
    assert!(
        mounts >= 2,
        "the init script and the sqlease config are mounted"
    );
    // The init service runs the repository's script.
    let init = format!("{:?}", c["services"]["vault-init"]);
    assert!(init.contains("vault-init.sh"), "{init}");
    // sqlease's health check asks /readyz.
    let hc = format!("{:?}", c["services"]["sqlease"]["healthcheck"]["test"]);
    assert!(hc.contains("/readyz"), "{hc}");
    assert_eq!(
        c["services"]["app"]["depends_on"]["sqlease"]["condition"],
        "service_healthy"
    );
}

#[test]
fn compose_sqlease_config_passes_check_config() {
    let c = compose();
    let vols = c["services"]["sqlease"]["volumes"]
        .as_sequence()
        .expect("sqlease volumes");
    let cfg = vols
        .iter()
        .filter_map(Value::as_str)
        .find_map(|v| {
            let mut parts = v.split(':');
            let (src, dst) = (parts.next()?, parts.next()?);
            (dst == "/etc/sqlease/sqlease.toml").then(|| root().join(src))
        })
        .expect("sqlease config mounted at /etc/sqlease/sqlease.toml");
    check_config(&cfg);
    // The files the config reads are the ones the init service writes.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let init_env = &c["services"]["vault-init"]["environment"];
    for key in ["SQLEASE_ROLE_ID_FILE", "SQLEASE_SECRET_ID_FILE"] {
        let path = init_env[key].as_str().unwrap();
        assert!(text.contains(path), "config does not read {path}");
    }
    // The listener's local user is the one the demo app logs in with.
    let app_env = &c["services"]["app"]["environment"];
    let user = app_env["DB_USER"].as_str().unwrap();
    let pw = app_env["DB_PASSWORD"].as_str().unwrap();
    assert!(text.contains(&format!("name = \"{user}\"")));
    assert!(text.contains(&format!("password = \"{pw}\"")));
    assert_eq!(
        c["services"]["app"]["environment"]["DB_HOST"], "sqlease",
        "the app goes through sqlease"
    );
    // The image's defaults point at the mounted path.
    let df = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(df.contains("SQLEASE_CONFIG=/etc/sqlease/sqlease.toml"));
    assert!(
        df.contains("USER 10001"),
        "the runtime image runs as non-root"
    );
}

#[test]
fn kubernetes_example_config_passes_check_config() {
    let text =
        std::fs::read_to_string(root().join("deploy/kubernetes/sqlease-sidecar.yaml")).unwrap();
    let mut kinds = Vec::new();
    let mut config = None;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v = Value::deserialize(doc).expect("manifest parses");
        let kind = v["kind"].as_str().unwrap_or("").to_string();
        if kind == "ConfigMap" {
            config = v["data"]["sqlease.toml"].as_str().map(str::to_string);
        }
        kinds.push(kind);
    }
    assert_eq!(kinds, ["ServiceAccount", "ConfigMap", "Deployment"]);
    let config = config.expect("ConfigMap with sqlease.toml");
    assert!(config.contains("method = \"kubernetes\""));
    // The files the pod mounts under /etc/sqlease/ exist there only: stand
    // them in with empty files at the same relative paths.
    let dir = tempfile::tempdir().unwrap();
    let mut config = config;
    let mut mounted = 0;
    while let Some(start) = config.find("\"/etc/sqlease/") {
        let len = config[start + 1..].find('"').expect("closing quote");
        let path = config[start + 1..start + 1 + len].to_string();
        let local = dir.path().join(path.trim_start_matches('/'));
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        std::fs::write(&local, "x\n").unwrap();
        config = config.replace(
            &format!("\"{path}\""),
            &format!("{:?}", local.display().to_string()),
        );
        mounted += 1;
    }
    assert!(
        mounted >= 3,
        "local password, admin token and CA files expected"
    );
    let f = dir.path().join("sqlease.toml");
    std::fs::write(&f, config).unwrap();
    check_config(&f);
}

#[test]
fn systemd_unit_runs_the_binary_and_reloads_with_sighup() {
    let text = std::fs::read_to_string(root().join("deploy/systemd/sqlease.service")).unwrap();
    for want in [
        "ExecStart=/usr/local/bin/sqlease run --config ",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=sqlease",
        "[Install]",
    ] {
        assert!(text.contains(want), "{want} missing");
    }
}

#[test]
fn docker_build_context_holds_every_workspace_member() {
    // cargo loads the whole workspace even for `--bin sqlease`: a member
    // missing from the build context fails `docker build`.
    let manifest: toml::Value =
        toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap();
    let members = manifest["workspace"]["members"]
        .as_array()
        .expect("workspace members");
    let df = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    assert!(
        df.lines().any(|l| l.trim() == "COPY . ."),
        "the build stage copies the whole context"
    );
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    let ignored: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(ignored.contains(&"target") && ignored.contains(&".git"));
    let mut checked = 0;
    for m in members
        .iter()
        .filter_map(|m| m.as_str())
        .filter(|m| *m != ".")
    {
        assert!(root().join(m).join("Cargo.toml").is_file(), "member {m}");
        assert!(
            !ignored
                .iter()
                .any(|i| m == *i || m.starts_with(&format!("{i}/"))),
            "workspace member {m} is excluded by .dockerignore"
        );
        checked += 1;
    }
    assert!(checked >= 1, "testkit at least");
}
