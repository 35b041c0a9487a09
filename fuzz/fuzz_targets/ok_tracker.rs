//! OK packets and their session-tracker block: `protocol::packets::parse_ok`,
//! `protocol::tracker::parse` and re-encoding, including the rewrite the
//! relay applies (entries the client would not have received are dropped,
//! SESSION_STATE_CHANGED cleared when none is left).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sqlease::protocol::caps::status::SESSION_STATE_CHANGED;
use sqlease::protocol::packets::{encode_ok, parse_ok};
use sqlease::protocol::tracker::{self, ClientView};

fn view(sel: u8, data: &[u8]) -> ClientView {
    let mut v = ClientView::default();
    if sel & 2 != 0 {
        v.apply_variable(b"session_track_system_variables", b"*");
    }
    if sel & 4 != 0 {
        v.apply_variable(b"session_track_state_change", b"ON");
    }
    if sel & 8 != 0 {
        v.apply_variable(b"session_track_schema", b"OFF");
    }
    if sel & 16 != 0 {
        // Arbitrary text as the application's own variable list.
        v.apply_variable(b"session_track_system_variables", data);
    }
    if sel & 32 != 0 {
        v.apply_variable(b"session_track_transaction_info", data);
    }
    v
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, payload)) = data.split_first() else {
        return;
    };
    let upstream_st = sel & 1 != 0;
    let client_st = sel & 64 != 0;
    let Some(ok) = parse_ok(payload, upstream_st) else {
        return;
    };
    // Re-encoding gives an OK that parses back equal.
    let enc = encode_ok(&ok, upstream_st);
    assert_eq!(parse_ok(&enc, upstream_st).as_ref(), Some(&ok));
    if ok.session_state.is_some() {
        assert!(upstream_st && ok.status & SESSION_STATE_CHANGED != 0);
    }

    let entries = ok.session_state.map(tracker::parse).unwrap_or_default();
    let block = tracker::encode(&entries);
    assert_eq!(tracker::parse(&block), entries);
    for e in &entries {
        let _ = e.variables();
        let _ = e.schema();
    }

    // The relay's rewrite for a client with this view.
    let v = view(sel, payload);
    let kept: Vec<_> = entries.iter().copied().filter(|e| v.wants(e)).collect();
    let kept_block = tracker::encode(&kept);
    let mut new = ok.clone();
    if kept.is_empty() || !client_st {
        new.status &= !SESSION_STATE_CHANGED;
        new.session_state = None;
    } else {
        new.session_state = Some(&kept_block);
    }
    let out = encode_ok(&new, client_st);
    let back = parse_ok(&out, client_st).expect("rewritten OK parses");
    assert_eq!(back.affected_rows, ok.affected_rows);
    assert_eq!(back.last_insert_id, ok.last_insert_id);
    assert_eq!(back.warnings, ok.warnings);
    assert_eq!(back.info, ok.info);
    assert_eq!(
        back.status & !SESSION_STATE_CHANGED,
        ok.status & !SESSION_STATE_CHANGED
    );
    let back_entries = back.session_state.map(tracker::parse).unwrap_or_default();
    assert_eq!(
        back_entries,
        kept.iter()
            .copied()
            .filter(|_| client_st)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        back.status & SESSION_STATE_CHANGED != 0,
        client_st && !kept.is_empty()
    );
});
