//! Session-state tracker data (the block at the end of OK packets).
//!
//! Entries are parsed one by one and unknown types are kept as opaque bytes
//! (mysql_common fails the whole block on one unknown type). The proxy turns
//! on more trackers upstream than the application asked for; [`ClientView`]
//! decides which entries the application would have received from the
//! server directly, so it sees exactly what it asked for.

use super::{put_lenenc, put_lenenc_str, read_lenenc_str};

pub const SYSTEM_VARIABLES: u8 = 0;
pub const SCHEMA: u8 = 1;
pub const STATE_CHANGE: u8 = 2;
pub const GTIDS: u8 = 3;
pub const TRANSACTION_CHARACTERISTICS: u8 = 4;
pub const TRANSACTION_STATE: u8 = 5;

/// One tracker entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub ty: u8,
    /// The entry's data (inside its length prefix).
    pub data: &'a [u8],
}

impl<'a> Entry<'a> {
    /// For a SYSTEM_VARIABLES entry: its (name, value) pairs.
    pub fn variables(&self) -> Vec<(&'a [u8], &'a [u8])> {
        let mut out = Vec::new();
        if self.ty != SYSTEM_VARIABLES {
            return out;
        }
        let mut d = self.data;
        while !d.is_empty() {
            let Some((name, n)) = read_lenenc_str(d) else {
                break;
            };
            let Some((value, m)) = read_lenenc_str(&d[n..]) else {
                break;
            };
            out.push((name, value));
            d = &d[n + m..];
        }
        out
    }

    /// For a SCHEMA entry: the schema name.
    pub fn schema(&self) -> Option<&'a [u8]> {
        if self.ty != SCHEMA {
            return None;
        }
        read_lenenc_str(self.data).map(|(s, _)| s)
    }
}

/// Parses a session-state block into entries; stops at the first malformed one.
pub fn parse(block: &[u8]) -> Vec<Entry<'_>> {
    let mut out = Vec::new();
    let mut b = block;
    while let Some((&ty, rest)) = b.split_first() {
        let Some((data, n)) = read_lenenc_str(rest) else {
            break;
        };
        out.push(Entry { ty, data });
        b = &rest[n..];
    }
    out
}

/// Encodes entries back into a block.
pub fn encode(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.push(e.ty);
        put_lenenc_str(&mut out, e.data);
    }
    out
}

/// Encodes one SYSTEM_VARIABLES entry's data.
pub fn variable_data(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(name.len() + value.len() + 2);
    put_lenenc_str(&mut d, name);
    put_lenenc_str(&mut d, value);
    d
}

/// Which system variables the application tracks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarList {
    All,
    Some(Vec<String>),
}

impl VarList {
    /// Parses a `session_track_system_variables` value.
    pub fn parse(v: &str) -> VarList {
        let names: Vec<String> = v
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        if names.iter().any(|n| n == "*") {
            VarList::All
        } else {
            VarList::Some(names)
        }
    }

    fn contains(&self, name: &[u8]) -> bool {
        match self {
            VarList::All => true,
            VarList::Some(v) => v.iter().any(|n| n.as_bytes().eq_ignore_ascii_case(name)),
        }
    }
}

/// The trackers as the application has them configured (server defaults,
/// changed by its own SETs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientView {
    pub schema: bool,
    pub state_change: bool,
    pub variables: VarList,
    /// `OFF`, `STATE` or `CHARACTERISTICS`.
    pub transaction_info: String,
}

impl Default for ClientView {
    /// MariaDB 10.11 / MySQL 8 server defaults.
    fn default() -> Self {
        ClientView {
            schema: true,
            state_change: false,
            variables: VarList::parse(
                "autocommit,character_set_client,character_set_connection,character_set_results,time_zone",
            ),
            transaction_info: "OFF".into(),
        }
    }
}

/// Tracker variables the proxy sets on its own upstream connections.
pub const PROXY_TRACKER_VARS: [&str; 4] = [
    "session_track_schema",
    "session_track_state_change",
    "session_track_system_variables",
    "session_track_transaction_info",
];

fn on_off(v: &[u8]) -> bool {
    v.eq_ignore_ascii_case(b"ON") || v == b"1"
}

impl ClientView {
    /// Applies a change the application made to its own tracker settings.
    pub fn apply_variable(&mut self, name: &[u8], value: &[u8]) {
        let v = String::from_utf8_lossy(value);
        if name.eq_ignore_ascii_case(b"session_track_schema") {
            self.schema = on_off(value);
        } else if name.eq_ignore_ascii_case(b"session_track_state_change") {
            self.state_change = on_off(value);
        } else if name.eq_ignore_ascii_case(b"session_track_system_variables") {
            self.variables = VarList::parse(&v);
        } else if name.eq_ignore_ascii_case(b"session_track_transaction_info") {
            self.transaction_info = v.to_ascii_uppercase();
        }
    }

    /// Whether the application would have received this entry.
    pub fn wants(&self, e: &Entry<'_>) -> bool {
        match e.ty {
            SYSTEM_VARIABLES => e
                .variables()
                .first()
                .is_some_and(|(n, _)| self.variables.contains(n)),
            SCHEMA => self.schema,
            STATE_CHANGE => self.state_change,
            TRANSACTION_STATE => self.transaction_info != "OFF",
            TRANSACTION_CHARACTERISTICS => self.transaction_info == "CHARACTERISTICS",
            _ => true,
        }
    }
}

/// Builds the value of the STATE_CHANGE entry ("1").
pub fn state_change_entry() -> Vec<u8> {
    let mut d = Vec::new();
    put_lenenc(&mut d, 1);
    d.push(b'1');
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> Vec<u8> {
        encode(&[
            Entry {
                ty: SYSTEM_VARIABLES,
                data: &variable_data(b"sql_mode", b"ANSI"),
            },
            Entry {
                ty: SYSTEM_VARIABLES,
                data: &variable_data(b"time_zone", b"+01:00"),
            },
            Entry {
                ty: SCHEMA,
                data: b"\x04test",
            },
            Entry {
                ty: STATE_CHANGE,
                data: b"\x011",
            },
            Entry {
                ty: 99,
                data: b"opaque",
            },
        ])
    }

    #[test]
    fn parse_and_filter_by_client_view() {
        let b = block();
        let entries = parse(&b);
        assert_eq!(entries.len(), 5);
        assert_eq!(
            entries[0].variables(),
            vec![(&b"sql_mode"[..], &b"ANSI"[..])]
        );
        assert_eq!(entries[2].schema(), Some(&b"test"[..]));
        let view = ClientView::default();
        let kept: Vec<_> = entries.iter().filter(|e| view.wants(e)).collect();
        // sql_mode and state change are not in the default client view.
        assert_eq!(kept.len(), 3);
        assert_eq!(kept[0].variables()[0].0, b"time_zone");
        assert_eq!(encode(&entries), b);
    }

    #[test]
    fn client_changes_its_view() {
        let mut v = ClientView::default();
        v.apply_variable(b"session_track_system_variables", b"*");
        v.apply_variable(b"session_track_state_change", b"ON");
        let b = block();
        assert!(parse(&b).iter().all(|e| v.wants(e)));
    }

    proptest::proptest! {
        /// Entries encode and parse back equal; arbitrary blocks parse into
        /// entries that re-encode to a block parsing the same.
        #[test]
        fn entries_round_trip(
            raw in proptest::collection::vec(
                (proptest::prelude::any::<u8>(), proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)),
                0..8,
            ),
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let entries: Vec<Entry<'_>> = raw.iter().map(|(ty, d)| Entry { ty: *ty, data: d }).collect();
            let block = encode(&entries);
            proptest::prop_assert_eq!(parse(&block), entries);
            let parsed = parse(&junk);
            let again = encode(&parsed);
            proptest::prop_assert_eq!(parse(&again), parsed.clone());
            let view = ClientView::default();
            for e in &parsed {
                let _ = (e.variables(), e.schema(), view.wants(e));
            }
        }

        #[test]
        fn variables_round_trip(name in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300), value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let d = variable_data(&name, &value);
            let e = Entry { ty: SYSTEM_VARIABLES, data: &d };
            proptest::prop_assert_eq!(e.variables(), vec![(&name[..], &value[..])]);
        }
    }

    #[test]
    fn garbage_never_panics() {
        for i in 0..=255u8 {
            let b = [i, 0xFC, i, 0, 1];
            for e in parse(&b) {
                let _ = e.variables();
            }
        }
    }
}
