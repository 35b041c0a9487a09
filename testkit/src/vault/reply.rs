//! Response shapes: the success envelope, Vault's error envelope and status rules
//! (contract §1.2, §1.3).

use serde_json::{json, Map, Value};

use super::util;

/// A Vault error: HTTP status plus the `errors` list.
#[derive(Debug, Clone)]
pub(crate) struct VErr {
    pub status: u16,
    pub errors: Vec<String>,
}

/// go-multierror's rendering of a list of errors.
pub(crate) fn multierror(msgs: &[&str]) -> String {
    let n = msgs.len();
    let head = if n == 1 {
        "1 error occurred:".to_string()
    } else {
        format!("{n} errors occurred:")
    };
    let mut s = head;
    for m in msgs {
        s.push_str("\n\t* ");
        s.push_str(m);
    }
    s.push_str("\n\n");
    s
}

impl VErr {
    pub(crate) fn new(status: u16, msg: impl Into<String>) -> Self {
        Self {
            status,
            errors: vec![msg.into()],
        }
    }
    /// Handler-level rejection (`logical.ErrorResponse`) → 400 with the plain text.
    pub(crate) fn bad(msg: impl Into<String>) -> Self {
        Self::new(400, msg)
    }
    /// Internal error → 500, multierror-wrapped.
    pub(crate) fn internal(msg: &str) -> Self {
        Self::new(500, multierror(&[msg]))
    }
    /// Policy denial for a valid token.
    pub(crate) fn denied() -> Self {
        Self::new(403, multierror(&["permission denied"]))
    }
    /// Unknown, expired or revoked token (Vault ≥ 1.17).
    pub(crate) fn invalid_token() -> Self {
        Self::new(403, multierror(&["permission denied", "invalid token"]))
    }
    /// Plain `permission denied` (lockout, k8s JWT rejection).
    pub(crate) fn plain_denied() -> Self {
        Self::new(403, "permission denied")
    }
    /// A read that found nothing.
    pub(crate) fn not_found() -> Self {
        Self {
            status: 404,
            errors: vec![],
        }
    }
    pub(crate) fn unsupported_path() -> Self {
        Self::new(404, multierror(&["unsupported path"]))
    }
    pub(crate) fn unsupported_op() -> Self {
        Self::new(405, multierror(&["unsupported operation"]))
    }
    pub(crate) fn no_route(path: &str) -> Self {
        Self::new(
            404,
            format!("no handler for route \"{path}\". route entry not found."),
        )
    }
    pub(crate) fn sealed() -> Self {
        Self::new(503, "Vault is sealed")
    }
    pub(crate) fn body(&self) -> Value {
        json!({ "errors": self.errors })
    }
}

/// A success envelope under construction.
#[derive(Debug, Default, Clone)]
pub(crate) struct Env {
    pub data: Option<Value>,
    pub auth: Option<Value>,
    pub lease_id: String,
    pub renewable: bool,
    pub lease_duration: i64,
    pub warnings: Vec<String>,
    pub mount_type: String,
    /// `sys/mounts`-style routes copy `data` keys to the top level.
    pub top_level: bool,
    /// For wrapping: the accessor of the wrapped secret (secret-id accessor, token accessor).
    pub wrapped_accessor: String,
}

impl Env {
    pub(crate) fn data(data: Value) -> Self {
        Self {
            data: Some(data),
            ..Self::default()
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        let warnings = if self.warnings.is_empty() {
            Value::Null
        } else {
            json!(self.warnings)
        };
        let mut m = Map::new();
        if self.top_level {
            if let Some(Value::Object(d)) = &self.data {
                for (k, v) in d {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
        m.insert("request_id".into(), json!(util::uuid()));
        m.insert("lease_id".into(), json!(self.lease_id));
        m.insert("renewable".into(), json!(self.renewable));
        m.insert("lease_duration".into(), json!(self.lease_duration));
        m.insert("data".into(), self.data.clone().unwrap_or(Value::Null));
        m.insert("wrap_info".into(), Value::Null);
        m.insert("warnings".into(), warnings);
        m.insert("auth".into(), self.auth.clone().unwrap_or(Value::Null));
        m.insert("mount_type".into(), json!(self.mount_type));
        Value::Object(m)
    }
}

/// What a handler produced.
#[derive(Debug)]
pub(crate) enum Reply {
    /// 204, empty body (becomes 200 + envelope when warnings must be carried).
    NoContent(Vec<String>),
    /// 202, empty body.
    Accepted,
    /// 200 + envelope.
    Env(Env),
    /// Arbitrary status and JSON body (sys/health, unwrap).
    Raw(u16, Value),
    /// Status only, no body (HEAD sys/health).
    Status(u16),
}

impl Reply {
    pub(crate) fn none() -> Self {
        Reply::NoContent(Vec::new())
    }
}

pub(crate) type HResult = Result<Reply, VErr>;
