//! The pure session-state tracker.
//!
//! Fed with the commands a client sends and the OK packets' tracker data,
//! it knows the schema, the session variables changed, the transaction
//! state, the prepared statements, and every reason the session is pinned
//! to its upstream connection. [`SessionState::safe_to_swap`] is the one
//! question rotation asks.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;

use super::classify::Effect;
use crate::protocol::caps::status;
use crate::protocol::tracker::{self, ClientView, Entry, PROXY_TRACKER_VARS};

/// Why a session cannot move to another upstream connection right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PinReason {
    Transaction,
    LockTables,
    TemporaryTables,
    UserVariables,
    NamedLocks,
    SqlPrepare,
    Handler,
    Xa,
    OpenCursor,
    PendingLongData,
    /// FOUND_ROWS() or SET TRANSACTION: only until the next statement.
    NextStatement,
}

impl PinReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            PinReason::Transaction => "transaction",
            PinReason::LockTables => "lock_tables",
            PinReason::TemporaryTables => "temporary_tables",
            PinReason::UserVariables => "user_variables",
            PinReason::NamedLocks => "named_locks",
            PinReason::SqlPrepare => "sql_prepare",
            PinReason::Handler => "handler",
            PinReason::Xa => "xa_transaction",
            PinReason::OpenCursor => "open_cursor",
            PinReason::PendingLongData => "pending_long_data",
            PinReason::NextStatement => "next_statement",
        }
    }

    pub const ALL: [PinReason; 11] = [
        PinReason::Transaction,
        PinReason::LockTables,
        PinReason::TemporaryTables,
        PinReason::UserVariables,
        PinReason::NamedLocks,
        PinReason::SqlPrepare,
        PinReason::Handler,
        PinReason::Xa,
        PinReason::OpenCursor,
        PinReason::PendingLongData,
        PinReason::NextStatement,
    ];
}

/// A prepared statement as the client knows it.
#[derive(Debug, Clone)]
pub struct Stmt {
    /// Id on the current upstream connection.
    pub upstream_id: u32,
    pub sql: Bytes,
    /// The default schema when it was prepared (table names resolve against it).
    pub schema: Option<Vec<u8>>,
    pub params: u16,
    pub columns: u16,
    /// Parameter types of the last execute that sent them.
    pub types: Option<Vec<u8>>,
    /// Re-prepared since the last execute: the next execute must carry types.
    pub needs_types: bool,
    pub long_data: bool,
    pub cursor_open: bool,
}

/// Everything the proxy knows about a client's session.
#[derive(Debug, Clone)]
pub struct SessionState {
    pub schema: Option<Vec<u8>>,
    /// Session system variables changed since connect (lower-case name → value).
    pub vars: BTreeMap<String, Vec<u8>>,
    pub status: u16,
    pub last_insert_id: u64,
    pub client_view: ClientView,
    pub stmts: HashMap<u32, Stmt>,
    temp_tables: u32,
    user_vars: bool,
    named_locks: bool,
    lock_tables: bool,
    sql_prepared: BTreeSet<String>,
    handler: bool,
    xa: bool,
    transient: u8,
    next_stmt_id: u32,
    /// Bumped on every change to replayable state.
    pub version: u64,
}

impl SessionState {
    pub fn new(schema: Option<Vec<u8>>, status: u16) -> SessionState {
        SessionState {
            schema,
            vars: BTreeMap::new(),
            status,
            last_insert_id: 0,
            client_view: ClientView::default(),
            stmts: HashMap::new(),
            temp_tables: 0,
            user_vars: false,
            named_locks: false,
            lock_tables: false,
            sql_prepared: BTreeSet::new(),
            handler: false,
            xa: false,
            transient: 0,
            next_stmt_id: 1,
            version: 0,
        }
    }

    pub fn in_transaction(&self) -> bool {
        self.status & status::IN_TRANS != 0
    }

    /// Every reason the session is pinned now.
    pub fn pin_reasons(&self) -> Vec<PinReason> {
        let mut r = Vec::new();
        if self.in_transaction() {
            r.push(PinReason::Transaction);
        }
        if self.lock_tables {
            r.push(PinReason::LockTables);
        }
        if self.temp_tables > 0 {
            r.push(PinReason::TemporaryTables);
        }
        if self.user_vars {
            r.push(PinReason::UserVariables);
        }
        if self.named_locks {
            r.push(PinReason::NamedLocks);
        }
        if !self.sql_prepared.is_empty() {
            r.push(PinReason::SqlPrepare);
        }
        if self.handler {
            r.push(PinReason::Handler);
        }
        if self.xa {
            r.push(PinReason::Xa);
        }
        if self.stmts.values().any(|s| s.cursor_open) {
            r.push(PinReason::OpenCursor);
        }
        if self.stmts.values().any(|s| s.long_data) {
            r.push(PinReason::PendingLongData);
        }
        if self.transient > 0 {
            r.push(PinReason::NextStatement);
        }
        r
    }

    /// Whether user variables are the only thing pinning the session.
    pub fn only_user_variables(&self) -> bool {
        self.pin_reasons() == [PinReason::UserVariables]
    }

    /// `Ok` when the session may move to another upstream connection now,
    /// else the first reason it may not.
    pub fn safe_to_swap(&self) -> Result<(), PinReason> {
        match self.pin_reasons().first() {
            Some(r) => Err(*r),
            None => Ok(()),
        }
    }

    /// Called before each command is forwarded.
    pub fn before_command(&mut self) {
        self.transient = self.transient.saturating_sub(1);
    }

    /// Applies what the classifier found in a COM_QUERY.
    pub fn apply_effects(&mut self, effects: &[Effect]) {
        for e in effects {
            match e {
                Effect::TempTableCreated => self.temp_tables += 1,
                Effect::TempTablesDropped(n) => {
                    self.temp_tables = self.temp_tables.saturating_sub(*n)
                }
                Effect::UserVariable => self.user_vars = true,
                Effect::NamedLock => self.named_locks = true,
                Effect::NamedLocksReleased => self.named_locks = false,
                Effect::LockTables => self.lock_tables = true,
                Effect::UnlockTables => self.lock_tables = false,
                Effect::SqlPrepare(n) => {
                    self.sql_prepared.insert(n.clone());
                }
                Effect::SqlDeallocate(n) => {
                    self.sql_prepared.remove(n);
                }
                Effect::HandlerOpen => self.handler = true,
                Effect::HandlerClose => self.handler = false,
                Effect::XaStart => self.xa = true,
                Effect::XaEnd => self.xa = false,
                // Lives through the statement itself and the next one.
                Effect::Transient => self.transient = 2,
                Effect::Kill { .. } => {}
            }
        }
    }

    /// The client-visible id for a newly prepared statement.
    pub fn allocate_stmt_id(&mut self) -> u32 {
        loop {
            let id = self.next_stmt_id;
            self.next_stmt_id = self.next_stmt_id.wrapping_add(1).max(1);
            if !self.stmts.contains_key(&id) {
                return id;
            }
        }
    }

    /// Applies status flags from an OK or EOF.
    pub fn apply_status(&mut self, st: u16) {
        self.status = st;
    }

    /// Applies an OK packet's tracker entries. Returns whether any entry
    /// changed the application's own tracker settings.
    pub fn apply_trackers(&mut self, entries: &[Entry<'_>]) -> bool {
        let mut view_changed = false;
        for e in entries {
            match e.ty {
                tracker::SYSTEM_VARIABLES => {
                    for (name, value) in e.variables() {
                        let n = String::from_utf8_lossy(name).to_ascii_lowercase();
                        if PROXY_TRACKER_VARS.contains(&n.as_str()) {
                            self.client_view.apply_variable(name, value);
                            view_changed = true;
                            continue;
                        }
                        if self.vars.get(&n).map(|v| v.as_slice()) != Some(value) {
                            self.vars.insert(n, value.to_vec());
                            self.version += 1;
                        }
                    }
                }
                tracker::SCHEMA => {
                    if let Some(s) = e.schema() {
                        let s = (!s.is_empty()).then(|| s.to_vec());
                        if s != self.schema {
                            self.schema = s;
                            self.version += 1;
                        }
                    }
                }
                _ => {}
            }
        }
        view_changed
    }

    pub fn set_last_insert_id(&mut self, id: u64) {
        if id != 0 && id != self.last_insert_id {
            self.last_insert_id = id;
            self.version += 1;
        }
    }

    /// The upstream connection died: server-side state that pinned the
    /// session is gone with it (the client was told with error 2013 if it
    /// was inside a transaction); replayable state survives.
    pub fn server_state_lost(&mut self) {
        self.status &= !(status::IN_TRANS | status::IN_TRANS_READONLY);
        self.temp_tables = 0;
        self.user_vars = false;
        self.named_locks = false;
        self.lock_tables = false;
        self.sql_prepared.clear();
        self.handler = false;
        self.xa = false;
        self.transient = 0;
        for s in self.stmts.values_mut() {
            s.cursor_open = false;
            s.long_data = false;
        }
    }

    /// COM_RESET_CONNECTION / COM_CHANGE_USER: everything back to defaults.
    pub fn reset(&mut self, schema: Option<Vec<u8>>, status: u16) {
        let view = ClientView::default();
        *self = SessionState::new(schema, status);
        self.client_view = view;
        self.version += 1;
    }

    /// `name=value` assignments that recreate the replayable state.
    pub fn replay_assignments(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .vars
            .iter()
            .filter(|(n, _)| !NOT_REPLAYED.contains(&n.as_str()))
            .map(|(n, v)| format!("{n}={}", sql_value(n, v)))
            .collect();
        if self.last_insert_id != 0 {
            out.push(format!("last_insert_id={}", self.last_insert_id));
        }
        out
    }
}

/// Variables that are not session settings an application chose.
const NOT_REPLAYED: [&str; 5] = [
    "last_insert_id",
    "insert_id",
    "identity",
    "pseudo_thread_id",
    "warning_count",
];

/// Renders a tracked value as SQL: numbers bare, NULL for unset character
/// sets, everything else a quoted string.
pub fn sql_value(name: &str, v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v);
    let numeric = !s.is_empty()
        && s.bytes()
            .enumerate()
            .all(|(i, c)| c.is_ascii_digit() || (i == 0 && c == b'-') || c == b'.')
        && s.bytes().any(|c| c.is_ascii_digit())
        && s.matches('.').count() <= 1;
    if numeric {
        return s.into_owned();
    }
    if s.eq_ignore_ascii_case("NULL") && name.starts_with("character_set") {
        return "NULL".into();
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('\'');
    for c in s.chars() {
        match c {
            '\'' => q.push_str("''"),
            '\\' => q.push_str("\\\\"),
            '\0' => q.push_str("\\0"),
            c => q.push(c),
        }
    }
    q.push('\'');
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::tracker::variable_data;

    #[test]
    fn trackers_update_vars_schema_and_view() {
        let mut s = SessionState::new(None, status::AUTOCOMMIT);
        let v1 = variable_data(b"sql_mode", b"ANSI_QUOTES");
        let v2 = variable_data(b"session_track_schema", b"OFF");
        let entries = [
            Entry {
                ty: tracker::SYSTEM_VARIABLES,
                data: &v1,
            },
            Entry {
                ty: tracker::SYSTEM_VARIABLES,
                data: &v2,
            },
            Entry {
                ty: tracker::SCHEMA,
                data: b"\x04shop",
            },
        ];
        assert!(s.apply_trackers(&entries));
        assert_eq!(s.schema.as_deref(), Some(&b"shop"[..]));
        assert!(!s.client_view.schema);
        assert_eq!(
            s.replay_assignments(),
            vec!["sql_mode='ANSI_QUOTES'".to_string()]
        );
        s.set_last_insert_id(42);
        assert!(s
            .replay_assignments()
            .contains(&"last_insert_id=42".to_string()));
    }

    #[test]
    fn pins() {
        let mut s = SessionState::new(None, status::AUTOCOMMIT);
        assert_eq!(s.safe_to_swap(), Ok(()));
        s.apply_status(status::AUTOCOMMIT | status::IN_TRANS);
        assert_eq!(s.safe_to_swap(), Err(PinReason::Transaction));
        s.apply_status(status::AUTOCOMMIT);
        s.apply_effects(&[Effect::TempTableCreated, Effect::TempTableCreated]);
        s.apply_effects(&[Effect::TempTablesDropped(1)]);
        assert_eq!(s.safe_to_swap(), Err(PinReason::TemporaryTables));
        s.apply_effects(&[Effect::TempTablesDropped(1)]);
        assert_eq!(s.safe_to_swap(), Ok(()));
        s.apply_effects(&[Effect::Transient]);
        assert_eq!(s.safe_to_swap(), Err(PinReason::NextStatement));
        s.before_command();
        assert_eq!(s.safe_to_swap(), Err(PinReason::NextStatement));
        s.before_command();
        assert_eq!(s.safe_to_swap(), Ok(()));
        s.apply_effects(&[Effect::LockTables, Effect::UserVariable]);
        assert_eq!(
            s.pin_reasons(),
            vec![PinReason::LockTables, PinReason::UserVariables]
        );
        s.reset(None, status::AUTOCOMMIT);
        assert_eq!(s.safe_to_swap(), Ok(()));
    }

    #[test]
    fn values_render_as_sql() {
        assert_eq!(sql_value("x", b"42"), "42");
        assert_eq!(sql_value("x", b"-1.5"), "-1.5");
        assert_eq!(sql_value("x", b"ON"), "'ON'");
        assert_eq!(sql_value("x", b""), "''");
        assert_eq!(sql_value("x", b"it's"), "'it''s'");
        assert_eq!(sql_value("character_set_results", b"NULL"), "NULL");
        assert_eq!(sql_value("time_zone", b"+01:00"), "'+01:00'");
    }
}
