//! What the MySQL database plugin does against the server: DSN handling,
//! statement parsing/substitution/execution, usernames and passwords
//! (contract §4.2, §4.5, §4.6).

use std::time::SystemTime;

use base64::Engine;
use mysql_async::prelude::Queryable;
use rand::seq::IndexedRandom;
use rand::Rng;
use serde_json::Value;

use super::util;

pub(crate) const PLUGINS: &[&str] = &[
    "mysql-database-plugin",
    "mysql-legacy-database-plugin",
    "mysql-rds-database-plugin",
    "mysql-aurora-database-plugin",
];

pub(crate) const DEFAULT_REVOCATION: &str =
    "REVOKE ALL PRIVILEGES, GRANT OPTION FROM '{{name}}'@'%'; DROP USER '{{name}}'@'%'";
pub(crate) const DEFAULT_ROTATION: &str =
    "ALTER USER '{{username}}'@'%' IDENTIFIED BY '{{password}}'";

/// A `database/config/:name` entry.
#[derive(Debug, Clone)]
pub(crate) struct ConnCfg {
    pub plugin: String,
    pub connection_url: String,
    pub username: String,
    pub password: String,
    pub allowed_roles: Vec<String>,
    pub verify: bool,
    pub max_open: i64,
    pub max_idle: i64,
    pub max_lifetime: String,
    pub username_template: String,
    pub password_policy: String,
    pub root_rotation_statements: Vec<String>,
}

/// Go's `url.PathEscape` (used for `{{username}}` in the connection URL).
fn path_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl ConnCfg {
    fn dsn(&self) -> String {
        self.connection_url
            .replace("{{username}}", &path_escape(&self.username))
            .replace("{{password}}", &self.password)
    }

    /// Connection options from the go-sql-driver DSN `user:pass@tcp(host:port)/db?params`.
    pub(crate) fn opts(&self) -> Result<mysql_async::Opts, String> {
        let dsn = self.dsn();
        let (cred, rest) = match dsn.rfind('@') {
            Some(i) => (&dsn[..i], &dsn[i + 1..]),
            None => ("", dsn.as_str()),
        };
        let (user, pass) = cred.split_once(':').unwrap_or((cred, ""));
        let mut b = mysql_async::OptsBuilder::default()
            .user(Some(user.to_string()))
            .pass(Some(pass.to_string()))
            .prefer_socket(false);
        let rest = rest.split('?').next().unwrap_or("");
        let (addr, db) = if let Some(inner) = rest.strip_prefix("tcp(") {
            let close = inner.find(')').ok_or("invalid DSN: missing ')'")?;
            (
                ("tcp", &inner[..close]),
                inner[close + 1..].trim_start_matches('/'),
            )
        } else if let Some(inner) = rest.strip_prefix("unix(") {
            let close = inner.find(')').ok_or("invalid DSN: missing ')'")?;
            (
                ("unix", &inner[..close]),
                inner[close + 1..].trim_start_matches('/'),
            )
        } else if let Some(db) = rest.strip_prefix('/') {
            (("tcp", "127.0.0.1:3306"), db)
        } else {
            return Err("invalid DSN: missing the slash separating the database name".into());
        };
        match addr {
            ("unix", path) => b = b.socket(Some(path.to_string())),
            (_, hp) => {
                let (h, p) = match hp.rsplit_once(':') {
                    Some((h, p)) => (h, p.parse::<u16>().map_err(|_| "invalid DSN: bad port")?),
                    None => (hp, 3306),
                };
                b = b
                    .ip_or_hostname(h.trim_start_matches('[').trim_end_matches(']'))
                    .tcp_port(p);
            }
        }
        if !db.is_empty() {
            b = b.db_name(Some(db.to_string()));
        }
        Ok(b.into())
    }

    /// True when the URL carries a literal password instead of `{{password}}`.
    pub(crate) fn literal_password_in_url(&self) -> bool {
        match self.connection_url.rfind('@') {
            Some(i) => {
                let cred = &self.connection_url[..i];
                matches!(cred.split_once(':'), Some((_, p)) if !p.is_empty() && !p.contains("{{password}}"))
            }
            None => false,
        }
    }

    fn sanitize(&self, e: &str) -> String {
        if self.password.is_empty() {
            e.to_string()
        } else {
            e.replace(&self.password, "[password]")
        }
    }
}

/// Connects and runs each `;`-separated query of each statement with `{{...}}` substituted.
pub(crate) async fn exec(
    cfg: &ConnCfg,
    stmts: &[String],
    subs: &[(&str, &str)],
) -> Result<(), String> {
    let opts = cfg.opts()?;
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .map_err(|e| cfg.sanitize(&e.to_string()))?;
    let mut result = Ok(());
    'outer: for stmt in stmts {
        for q in stmt.split(';') {
            let q = q.trim();
            if q.is_empty() {
                continue;
            }
            let mut q = q.to_string();
            for (k, v) in subs {
                q = q.replace(&format!("{{{{{k}}}}}"), v);
            }
            if let Err(e) = conn.query_drop(q).await {
                let mut msg = cfg.sanitize(&e.to_string());
                for (k, v) in subs {
                    if *k == "password" && !v.is_empty() {
                        msg = msg.replace(v, "[password]");
                    }
                }
                result = Err(msg);
                break 'outer;
            }
        }
    }
    let _ = conn.disconnect().await;
    result
}

/// Checks that the connection works (`verify_connection`).
pub(crate) async fn verify(cfg: &ConnCfg) -> Result<(), String> {
    let opts = cfg.opts()?;
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .map_err(|e| cfg.sanitize(&e.to_string()))?;
    let r = conn.ping().await.map_err(|e| cfg.sanitize(&e.to_string()));
    let _ = conn.disconnect().await;
    r
}

/// Statements given as a list, a `;`-separated string, a JSON array string, or base64 of either.
pub(crate) fn parse_statements(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(_) => util::to_list_raw(v),
        Value::String(s) => {
            let s = s.trim();
            if s.is_empty() {
                return Some(vec![]);
            }
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(s)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            let s = decoded.as_deref().unwrap_or(s);
            if s.starts_with('[') {
                if let Ok(Value::Array(a)) = serde_json::from_str::<Value>(s) {
                    return util::to_list_raw(&Value::Array(a));
                }
            }
            Some(vec![s.to_string()])
        }
        Value::Null => Some(vec![]),
        _ => None,
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// Renders a username (default plugin templates, or a simple custom template).
pub(crate) fn username(cfg: &ConnCfg, display: &str, role: &str) -> Result<String, String> {
    if !cfg.username_template.is_empty() {
        return render_template(&cfg.username_template, display, role);
    }
    let now = util::unix(SystemTime::now());
    Ok(if cfg.plugin == "mysql-database-plugin" {
        truncate(
            &format!(
                "v-{}-{}-{}-{}",
                truncate(display, 10),
                truncate(role, 10),
                util::base62(20),
                now
            ),
            32,
        )
    } else {
        truncate(&format!("v-{}-{}", truncate(role, 4), util::base62(20)), 16)
    })
}

/// A small Go-template subset: `{{ term | fn args | ... }}` where a term is `.DisplayName`,
/// `.RoleName`, `random N`, `unix_time`, `uuid` or a quoted string and the functions are
/// `truncate N`, `lowercase`, `uppercase` and `replace "a" "b"`. `printf` is not supported.
pub(crate) fn render_template(tpl: &str, display: &str, role: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = tpl;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or("unclosed action")?;
        let action = after[..end].trim();
        let mut val: Option<String> = None;
        for (i, stage) in action.split('|').map(str::trim).enumerate() {
            let words = split_words(stage);
            let w: Vec<&str> = words.iter().map(String::as_str).collect();
            let num = |x: Option<&&str>| -> Result<usize, String> {
                x.and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("bad number in {stage:?}"))
            };
            val = Some(match (i, w.first().copied()) {
                (0, Some(".DisplayName")) => display.to_string(),
                (0, Some(".RoleName")) => role.to_string(),
                (0, Some("random")) => util::base62(num(w.get(1))?),
                (0, Some("unix_time")) => util::unix(SystemTime::now()).to_string(),
                (0, Some("uuid")) => util::uuid(),
                (0, Some(s)) if stage.starts_with('"') => s.to_string(),
                (_, Some("truncate")) if i > 0 => {
                    truncate(val.as_deref().unwrap_or(""), num(w.get(1))?)
                }
                (_, Some("lowercase")) if i > 0 => val.unwrap_or_default().to_lowercase(),
                (_, Some("uppercase")) if i > 0 => val.unwrap_or_default().to_uppercase(),
                (_, Some("replace")) if i > 0 && w.len() == 3 => {
                    val.unwrap_or_default().replace(w[1], w[2])
                }
                _ => return Err(format!("function or field not supported: {stage:?}")),
            });
        }
        out.push_str(&val.unwrap_or_default());
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn split_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                if !quoted {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// 20 characters of `[a-zA-Z0-9-]` with at least one lower, upper, digit and dash.
pub(crate) fn password() -> String {
    const CHARSET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-";
    let mut rng = rand::rng();
    loop {
        let p: String = (0..20)
            .map(|_| char::from(*CHARSET.choose(&mut rng).unwrap_or(&b'a')))
            .collect();
        let ok = p.chars().any(|c| c.is_ascii_lowercase())
            && p.chars().any(|c| c.is_ascii_uppercase())
            && p.chars().any(|c| c.is_ascii_digit())
            && p.contains('-');
        if ok {
            return p;
        }
        let _ = rng.random::<u8>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> ConnCfg {
        ConnCfg {
            plugin: "mysql-database-plugin".into(),
            connection_url: url.into(),
            username: "root".into(),
            password: "pw".into(),
            allowed_roles: vec![],
            verify: true,
            max_open: 4,
            max_idle: 0,
            max_lifetime: "0s".into(),
            username_template: String::new(),
            password_policy: String::new(),
            root_rotation_statements: vec![],
        }
    }

    #[test]
    fn dsn_parses() {
        let c = cfg("{{username}}:{{password}}@tcp(127.0.0.1:3307)/");
        let o = c.opts().expect("opts");
        assert_eq!(o.tcp_port(), 3307);
        assert_eq!(o.user(), Some("root"));
        assert!(!c.literal_password_in_url());
        assert!(cfg("root:secret@tcp(h:1)/").literal_password_in_url());
    }

    #[test]
    fn usernames_and_passwords() {
        let c = cfg("x");
        let u = username(&c, "approle", "readonly").expect("u");
        assert_eq!(u.len(), 32);
        assert!(u.starts_with("v-approle-readonly-"));
        let p = password();
        assert_eq!(p.len(), 20);
        let t = render_template("{{.RoleName | uppercase}}_{{random 4}}", "d", "ro").expect("t");
        assert!(t.starts_with("RO_") && t.len() == 7);
        assert!(render_template("{{printf \"%s\" .RoleName}}", "d", "r").is_err());
    }

    #[test]
    fn statements_forms() {
        let v = parse_statements(&Value::String("CREATE USER x; GRANT y".into())).expect("s");
        assert_eq!(v.len(), 1);
        let j = parse_statements(&Value::String("[\"a\",\"b\"]".into())).expect("j");
        assert_eq!(j, vec!["a", "b"]);
    }
}
