//! The first client packet at the listener: SSLRequest or
//! HandshakeResponse41 (`frontend::parse_handshake_response`), read through
//! the frame decoder with the listener's 64 KiB bound.
//!
//! A parsed response is re-encoded canonically and must parse back equal.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sqlease::frontend::{parse_handshake_response, HandshakeResponse};
use sqlease::protocol::caps::*;
use sqlease::protocol::frame::take_logical;
use sqlease::protocol::put_lenenc_str;

fn encode(r: &HandshakeResponse) -> Vec<u8> {
    let c = r.capabilities;
    let mut p = Vec::new();
    p.extend_from_slice(&c.to_le_bytes());
    p.extend_from_slice(&r.max_packet.to_le_bytes());
    p.push(r.collation);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(&r.user);
    p.push(0);
    if c & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        put_lenenc_str(&mut p, &r.auth_response);
    } else if c & CLIENT_SECURE_CONNECTION != 0 {
        p.push(u8::try_from(r.auth_response.len()).expect("parsed with a 1-byte length"));
        p.extend_from_slice(&r.auth_response);
    } else {
        p.extend_from_slice(&r.auth_response);
        p.push(0);
    }
    let tail = r.plugin.is_some() || r.attributes.is_some();
    if c & CLIENT_CONNECT_WITH_DB != 0 && (r.database.is_some() || tail) {
        p.extend_from_slice(r.database.as_deref().unwrap_or_default());
        p.push(0);
    }
    if let Some(pl) = &r.plugin {
        p.extend_from_slice(pl);
        p.push(0);
    }
    if let Some(a) = &r.attributes {
        put_lenenc_str(&mut p, a);
    }
    p
}

fn check(payload: &[u8]) {
    let ssl_request = payload.len() == 32
        && u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]) & CLIENT_SSL != 0;
    let Some(r) = parse_handshake_response(payload) else {
        return;
    };
    assert!(r.capabilities & CLIENT_PROTOCOL_41 != 0);
    assert!(payload.len() >= 32);
    assert!(!r.user.contains(&0));
    assert!(r.user.len() + r.auth_response.len() <= payload.len());
    if ssl_request {
        // What the listener would see as an SSLRequest carries no user.
        assert!(r.user.is_empty() && r.auth_response.is_empty());
    }
    if r.database.is_some() {
        assert!(r.capabilities & CLIENT_CONNECT_WITH_DB != 0);
    }
    if r.plugin.is_some() {
        assert!(r.capabilities & CLIENT_PLUGIN_AUTH != 0);
    }
    if r.attributes.is_some() {
        assert!(r.capabilities & CLIENT_CONNECT_ATTRS != 0);
    }
    let enc = encode(&r);
    assert_eq!(parse_handshake_response(&enc).as_ref(), Some(&r));
}

fuzz_target!(|data: &[u8]| {
    // The bare payload, and the same bytes as the listener reads them.
    check(data);
    let mut buf = BytesMut::from(data);
    if let Ok(Some(l)) = take_logical(&mut buf, Some(1), 64 * 1024) {
        check(&l.payload);
    }
});
