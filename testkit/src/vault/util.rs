//! Small helpers shared by the stand-in modules: Vault-style durations, RFC 3339
//! time stamps, random identifiers and request-body field access.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use serde_json::{Map, Value};

use super::reply::VErr;

/// Vault's system-wide default and maximum lease TTL (768h).
pub(crate) const SYSTEM_TTL: i64 = 768 * 3600;

const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `n` random characters from `[0-9A-Za-z]`.
pub(crate) fn base62(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(BASE62[rng.random_range(0..BASE62.len())]))
        .collect()
}

/// A random UUID-formatted string (version 4 layout).
pub(crate) fn uuid() -> String {
    let b: [u8; 16] = rand::rng().random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub(crate) fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Seconds from `now` until `t`, rounded like Vault (`time.Until(t).Round(time.Second)`), never negative.
pub(crate) fn secs_until(t: SystemTime, now: SystemTime) -> i64 {
    match t.duration_since(now) {
        Ok(d) => (d.as_millis() as i64 + 500) / 1000,
        Err(_) => 0,
    }
}

pub(crate) fn add_secs(t: SystemTime, s: i64) -> SystemTime {
    if s >= 0 {
        t + Duration::from_secs(s as u64)
    } else {
        t - Duration::from_secs(s.unsigned_abs())
    }
}

/// RFC 3339 with nanoseconds in UTC, as Go's `time.Time` marshals it.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, dd) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{dd:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// MySQL-plugin `{{expiration}}` format (`2006-01-02 15:04:05-0700`), in UTC.
pub(crate) fn sql_time(t: SystemTime) -> String {
    let s = rfc3339(t);
    format!("{} {}+0000", &s[0..10], &s[11..19])
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Go-style duration text without zero parts: `1h`, `9m58s`, `0s`.
pub(crate) fn fmt_duration(secs: i64) -> String {
    if secs <= 0 {
        return "0s".into();
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// Parses a Vault duration: integer seconds, a numeric string, or a Go duration string.
pub(crate) fn parse_duration(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => parse_duration_str(s),
        Value::Null => Some(0),
        _ => None,
    }
}

pub(crate) fn parse_duration_str(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let num: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            "d" => 86_400.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += num * mult;
    }
    let secs = total as i64;
    Some(if neg { -secs } else { secs })
}

/// A request body (or merged query parameters) that remembers which keys a handler read,
/// so unknown parameters can be reported the way Vault does.
pub(crate) struct Body {
    map: Map<String, Value>,
    used: Mutex<BTreeSet<String>>,
}

impl Body {
    pub(crate) fn new(map: Map<String, Value>) -> Self {
        Self {
            map,
            used: Mutex::new(BTreeSet::new()),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string());
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// Keys present in the body that no handler looked at (sorted).
    pub(crate) fn unused(&self) -> Vec<String> {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        self.map
            .keys()
            .filter(|k| !used.contains(*k))
            .cloned()
            .collect()
    }

    pub(crate) fn str(&self, key: &str) -> Result<Option<String>, VErr> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(_) => Err(field_err(key, "expected a string")),
        }
    }

    pub(crate) fn str_or(&self, key: &str, default: &str) -> Result<String, VErr> {
        Ok(self.str(key)?.unwrap_or_else(|| default.to_string()))
    }

    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, VErr> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) => match s.as_str() {
                "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(Some(true)),
                "false" | "0" | "f" | "F" | "FALSE" | "False" | "" => Ok(Some(false)),
                _ => Err(field_err(key, "expected a bool")),
            },
            Some(Value::Number(n)) => Ok(Some(n.as_i64() != Some(0))),
            Some(_) => Err(field_err(key, "expected a bool")),
        }
    }

    pub(crate) fn int(&self, key: &str) -> Result<Option<i64>, VErr> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| field_err(key, "expected an integer")),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(Some(0)),
            Some(Value::String(s)) => s
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| field_err(key, "expected an integer")),
            Some(_) => Err(field_err(key, "expected an integer")),
        }
    }

    pub(crate) fn duration(&self, key: &str) -> Result<Option<i64>, VErr> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => parse_duration(v)
                .map(Some)
                .ok_or_else(|| field_err(key, "invalid duration")),
        }
    }

    /// A list given as a JSON array or a comma-separated string.
    pub(crate) fn list(&self, key: &str) -> Result<Option<Vec<String>>, VErr> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => to_list(v)
                .map(Some)
                .ok_or_else(|| field_err(key, "expected a list")),
        }
    }
}

pub(crate) fn to_list(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Some(s.trim().to_string()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()
            .map(|v| v.into_iter().filter(|s| !s.is_empty()).collect()),
        Value::String(s) => Some(
            s.split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
        ),
        _ => None,
    }
}

/// A JSON array of strings kept verbatim (statements may contain commas).
pub(crate) fn to_list_raw(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(a) => a.iter().map(|x| x.as_str().map(str::to_string)).collect(),
        _ => None,
    }
}

fn field_err(key: &str, what: &str) -> VErr {
    VErr::bad(format!(
        "error converting input for field \"{key}\": {what}"
    ))
}

/// Glob match supporting `*` anywhere (used for `allowed_roles` and k8s bound names).
pub(crate) fn glob(pattern: &str, s: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let mut rest = s;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(p) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else {
            match rest.find(p) {
                Some(pos) => rest = &rest[pos + p.len()..],
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_vault() {
        assert_eq!(parse_duration_str("1h"), Some(3600));
        assert_eq!(parse_duration_str("1h30m"), Some(5400));
        assert_eq!(parse_duration_str("600"), Some(600));
        assert_eq!(parse_duration_str("1.5h"), Some(5400));
        assert_eq!(parse_duration_str("x"), None);
        assert_eq!(fmt_duration(3600), "1h");
        assert_eq!(fmt_duration(598), "9m58s");
    }

    #[test]
    fn rfc3339_epoch() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_717_000_000);
        assert!(rfc3339(t).starts_with("2024-05-29T16:26:40"));
    }

    #[test]
    fn glob_works() {
        assert!(glob("*", "x"));
        assert!(glob("read*", "readonly"));
        assert!(!glob("read*", "write"));
        assert!(glob("a*c", "abbc"));
    }
}
