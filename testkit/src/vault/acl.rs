//! ACL policies: a parser for the HCL (and JSON) subset Vault policies use, and
//! deny-by-default enforcement with Vault's "most specific path wins" rule.

use serde_json::Value;

/// One `path "..." { capabilities = [...] }` rule.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub pattern: String,
    pub caps: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub name: String,
    pub text: String,
    pub rules: Vec<Rule>,
}

pub(crate) const DEFAULT_POLICY: &str = r#"# Allow tokens to look up their own properties
path "auth/token/lookup-self" {
    capabilities = ["read"]
}

# Allow tokens to renew themselves
path "auth/token/renew-self" {
    capabilities = ["update"]
}

# Allow tokens to revoke themselves
path "auth/token/revoke-self" {
    capabilities = ["update"]
}

# Allow a token to look up its own capabilities on a path
path "sys/capabilities-self" {
    capabilities = ["update"]
}

# Allow a token to renew a lease via lease_id in the request body; old path for
# old clients, new path for newer
path "sys/renew" {
    capabilities = ["update"]
}
path "sys/leases/renew" {
    capabilities = ["update"]
}

# Allow looking up lease properties. This requires knowing the lease ID ahead
# of time and does not divulge any sensitive information.
path "sys/leases/lookup" {
    capabilities = ["update"]
}

# Allow a token to manage its own cubbyhole
path "cubbyhole/*" {
    capabilities = ["create", "read", "update", "delete", "list"]
}

# Allow a token to wrap arbitrary values in a response-wrapping token
path "sys/wrapping/wrap" {
    capabilities = ["update"]
}

# Allow a token to look up the creation time and TTL of a given
# response-wrapping token
path "sys/wrapping/lookup" {
    capabilities = ["update"]
}

# Allow a token to unwrap a response-wrapping token. This is a convenience to
# avoid client token swapping since this is also part of the response wrapping
# policy.
path "sys/wrapping/unwrap" {
    capabilities = ["update"]
}

# Allow general purpose tools
path "sys/tools/hash" {
    capabilities = ["update"]
}
path "sys/tools/hash/*" {
    capabilities = ["update"]
}
"#;

pub(crate) fn default_policy() -> Policy {
    // The built-in text is known to parse.
    parse("default", DEFAULT_POLICY).unwrap_or(Policy {
        name: "default".into(),
        text: DEFAULT_POLICY.into(),
        rules: Vec::new(),
    })
}

const KNOWN_CAPS: &[&str] = &[
    "create", "read", "update", "delete", "list", "sudo", "deny", "patch",
];

/// Parses a policy in HCL or JSON form.
pub(crate) fn parse(name: &str, text: &str) -> Result<Policy, String> {
    let rules = if text.trim_start().starts_with('{') {
        parse_json(text)?
    } else {
        parse_hcl(text)?
    };
    for r in &rules {
        for c in &r.caps {
            if !KNOWN_CAPS.contains(&c.as_str()) {
                return Err(format!("invalid capability \"{c}\""));
            }
        }
    }
    Ok(Policy {
        name: name.to_string(),
        text: text.to_string(),
        rules,
    })
}

fn parse_json(text: &str) -> Result<Vec<Rule>, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut rules = Vec::new();
    if let Some(Value::Object(paths)) = v.get("path") {
        for (pattern, body) in paths {
            let caps = body
                .get("capabilities")
                .and_then(super::util::to_list)
                .unwrap_or_default();
            rules.push(Rule {
                pattern: pattern.clone(),
                caps,
            });
        }
    }
    Ok(rules)
}

#[derive(Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Sym(char),
}

fn lex(text: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut it = text.chars().peekable();
    while let Some(&c) = it.peek() {
        if c.is_whitespace() || c == ',' {
            it.next();
        } else if c == '#' {
            while let Some(&d) = it.peek() {
                if d == '\n' {
                    break;
                }
                it.next();
            }
        } else if c == '/' {
            it.next();
            if it.peek() == Some(&'/') {
                while let Some(&d) = it.peek() {
                    if d == '\n' {
                        break;
                    }
                    it.next();
                }
            } else {
                return Err("unexpected '/'".into());
            }
        } else if c == '"' {
            it.next();
            let mut s = String::new();
            loop {
                match it.next() {
                    Some('"') => break,
                    Some('\\') => {
                        if let Some(e) = it.next() {
                            s.push(e);
                        }
                    }
                    Some(ch) => s.push(ch),
                    None => return Err("unterminated string".into()),
                }
            }
            out.push(Tok::Str(s));
        } else if "{}[]=".contains(c) {
            it.next();
            out.push(Tok::Sym(c));
        } else if c.is_alphanumeric() || c == '_' {
            let mut s = String::new();
            while let Some(&d) = it.peek() {
                if d.is_alphanumeric() || d == '_' || d == '-' {
                    s.push(d);
                    it.next();
                } else {
                    break;
                }
            }
            out.push(Tok::Ident(s));
        } else {
            return Err(format!("unexpected character {c:?}"));
        }
    }
    Ok(out)
}

fn parse_hcl(text: &str) -> Result<Vec<Rule>, String> {
    let toks = lex(text)?;
    let mut rules = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Ident(k) if k == "path" => {
                let pattern = match toks.get(i + 1) {
                    Some(Tok::Str(s)) => s.clone(),
                    _ => return Err("expected a quoted path after 'path'".into()),
                };
                if toks.get(i + 2) != Some(&Tok::Sym('{')) {
                    return Err("expected '{' after path".into());
                }
                i += 3;
                let mut caps = Vec::new();
                let mut depth = 1;
                while i < toks.len() && depth > 0 {
                    match &toks[i] {
                        Tok::Sym('{') => depth += 1,
                        Tok::Sym('}') => depth -= 1,
                        Tok::Ident(k) if k == "capabilities" && depth == 1 => {
                            if toks.get(i + 1) != Some(&Tok::Sym('='))
                                || toks.get(i + 2) != Some(&Tok::Sym('['))
                            {
                                return Err("expected 'capabilities = ['".into());
                            }
                            i += 3;
                            while i < toks.len() && toks[i] != Tok::Sym(']') {
                                if let Tok::Str(s) = &toks[i] {
                                    caps.push(s.clone());
                                }
                                i += 1;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                if depth != 0 {
                    return Err("unterminated path block".into());
                }
                rules.push(Rule { pattern, caps });
            }
            Tok::Ident(_) => {
                // Unknown top-level stanza (e.g. `name = "x"`): skip a value or a block.
                i += 1;
            }
            _ => i += 1,
        }
    }
    Ok(rules)
}

/// How specific a matching pattern is (higher wins), or `None` if it does not match.
fn match_rank(pattern: &str, path: &str) -> Option<Rank> {
    let (pat, glob) = match pattern.strip_suffix('*') {
        Some(p) => (p, true),
        None => (pattern, false),
    };
    let psegs: Vec<&str> = pat.split('/').collect();
    let segs: Vec<&str> = path.split('/').collect();
    let plus = psegs.iter().filter(|s| **s == "+").count();
    if plus == 0 {
        let ok = if glob {
            path.starts_with(pat)
        } else {
            path == pat
        };
        return ok.then_some((if glob { 0 } else { 1 }, pat.len(), usize::MAX));
    }
    // Segment-wise match with `+` wildcards; the last pattern segment may be a prefix when globbing.
    if (!glob && segs.len() != psegs.len()) || segs.len() < psegs.len() {
        return None;
    }
    for (i, p) in psegs.iter().enumerate() {
        let last = i + 1 == psegs.len();
        let s = segs[i];
        let ok = *p == "+" || *p == s || (glob && last && s.starts_with(p));
        if !ok {
            return None;
        }
    }
    Some((if glob { 0 } else { 1 }, pat.len(), usize::MAX - plus))
}

/// Capabilities granted on `path` by the given policies (most specific pattern wins).
/// (exact?, literal prefix length, fewer `+` wildcards): higher is more specific.
type Rank = (u8, usize, usize);

pub(crate) fn capabilities<'a>(
    policies: impl Iterator<Item = &'a Policy>,
    path: &str,
) -> Vec<String> {
    let mut best: Option<(Rank, String, Vec<String>)> = None;
    for p in policies {
        for r in &p.rules {
            if let Some(rank) = match_rank(&r.pattern, path) {
                match &mut best {
                    Some((br, bp, caps)) if *br == rank && *bp == r.pattern => {
                        caps.extend(r.caps.iter().cloned());
                    }
                    Some((br, _, _)) if *br >= rank => {}
                    _ => best = Some((rank, r.pattern.clone(), r.caps.clone())),
                }
            }
        }
    }
    let caps = best.map(|b| b.2).unwrap_or_default();
    if caps.iter().any(|c| c == "deny") {
        return vec!["deny".into()];
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let p = parse(
            "p",
            r#"
            path "database/creds/app" { capabilities = ["read"] }
            path "sys/leases/*" { capabilities = ["update"] }
            path "secret/+/x" { capabilities = ["list"] }
        "#,
        )
        .expect("parse");
        let d = default_policy();
        assert!(!d.rules.is_empty());
        let caps = |path| capabilities([&p, &d].into_iter(), path);
        assert_eq!(caps("database/creds/app"), vec!["read"]);
        assert!(caps("database/creds/other").is_empty());
        assert_eq!(caps("sys/leases/revoke"), vec!["update"]);
        assert_eq!(caps("secret/a/x"), vec!["list"]);
        assert_eq!(caps("auth/token/lookup-self"), vec!["read"]);
    }
}
