//! Capability flags as raw `u32` (mysql_common's `CapabilityFlags` drops
//! bits it does not know, so negotiation is done on raw values).

pub const CLIENT_LONG_PASSWORD: u32 = 0x0000_0001;
pub const CLIENT_FOUND_ROWS: u32 = 0x0000_0002;
pub const CLIENT_LONG_FLAG: u32 = 0x0000_0004;
pub const CLIENT_CONNECT_WITH_DB: u32 = 0x0000_0008;
pub const CLIENT_NO_SCHEMA: u32 = 0x0000_0010;
pub const CLIENT_COMPRESS: u32 = 0x0000_0020;
pub const CLIENT_ODBC: u32 = 0x0000_0040;
pub const CLIENT_LOCAL_FILES: u32 = 0x0000_0080;
pub const CLIENT_IGNORE_SPACE: u32 = 0x0000_0100;
pub const CLIENT_PROTOCOL_41: u32 = 0x0000_0200;
pub const CLIENT_INTERACTIVE: u32 = 0x0000_0400;
pub const CLIENT_SSL: u32 = 0x0000_0800;
pub const CLIENT_IGNORE_SIGPIPE: u32 = 0x0000_1000;
pub const CLIENT_TRANSACTIONS: u32 = 0x0000_2000;
pub const CLIENT_RESERVED: u32 = 0x0000_4000;
pub const CLIENT_SECURE_CONNECTION: u32 = 0x0000_8000;
pub const CLIENT_MULTI_STATEMENTS: u32 = 0x0001_0000;
pub const CLIENT_MULTI_RESULTS: u32 = 0x0002_0000;
pub const CLIENT_PS_MULTI_RESULTS: u32 = 0x0004_0000;
pub const CLIENT_PLUGIN_AUTH: u32 = 0x0008_0000;
pub const CLIENT_CONNECT_ATTRS: u32 = 0x0010_0000;
pub const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x0020_0000;
pub const CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS: u32 = 0x0040_0000;
pub const CLIENT_SESSION_TRACK: u32 = 0x0080_0000;
pub const CLIENT_DEPRECATE_EOF: u32 = 0x0100_0000;
pub const CLIENT_OPTIONAL_RESULTSET_METADATA: u32 = 0x0200_0000;
pub const CLIENT_ZSTD_COMPRESSION: u32 = 0x0400_0000;
pub const CLIENT_QUERY_ATTRIBUTES: u32 = 0x0800_0000;
pub const CLIENT_MULTI_FACTOR_AUTH: u32 = 0x1000_0000;
pub const CLIENT_CAPABILITY_EXTENSION: u32 = 0x2000_0000;
pub const CLIENT_SSL_VERIFY_SERVER_CERT: u32 = 0x4000_0000;
pub const CLIENT_REMEMBER_OPTIONS: u32 = 0x8000_0000;

/// Capabilities the proxy understands and may offer to applications
/// (intersected with what the upstream server offers). Compression, query
/// attributes, optional result-set metadata and multi-factor auth are not
/// implemented and are masked; MariaDB's extended capabilities (bulk
/// operations, metadata cache) are masked by announcing none.
pub const PROXY_SUPPORTED: u32 = CLIENT_LONG_PASSWORD
    | CLIENT_FOUND_ROWS
    | CLIENT_LONG_FLAG
    | CLIENT_CONNECT_WITH_DB
    | CLIENT_NO_SCHEMA
    | CLIENT_ODBC
    | CLIENT_LOCAL_FILES
    | CLIENT_IGNORE_SPACE
    | CLIENT_PROTOCOL_41
    | CLIENT_INTERACTIVE
    | CLIENT_IGNORE_SIGPIPE
    | CLIENT_TRANSACTIONS
    | CLIENT_RESERVED
    | CLIENT_SECURE_CONNECTION
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_PLUGIN_AUTH
    | CLIENT_CONNECT_ATTRS
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS
    | CLIENT_SESSION_TRACK
    | CLIENT_DEPRECATE_EOF;

/// Capabilities the proxy always needs on its upstream connections.
pub const UPSTREAM_REQUIRED: u32 = CLIENT_PROTOCOL_41
    | CLIENT_SECURE_CONNECTION
    | CLIENT_PLUGIN_AUTH
    | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
    | CLIENT_TRANSACTIONS
    | CLIENT_SESSION_TRACK
    | CLIENT_LONG_PASSWORD;

/// Capabilities a client's session behaviour depends on: they are mirrored
/// from the client to every upstream connection of its session so raw bytes
/// stay valid across swaps.
pub const MIRRORED: u32 = CLIENT_FOUND_ROWS
    | CLIENT_LONG_FLAG
    | CLIENT_NO_SCHEMA
    | CLIENT_ODBC
    | CLIENT_LOCAL_FILES
    | CLIENT_IGNORE_SPACE
    | CLIENT_INTERACTIVE
    | CLIENT_MULTI_STATEMENTS
    | CLIENT_MULTI_RESULTS
    | CLIENT_PS_MULTI_RESULTS
    | CLIENT_DEPRECATE_EOF
    | CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS
    | CLIENT_IGNORE_SIGPIPE
    | CLIENT_RESERVED;

/// The capability context of one client session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// What the client and the proxy agreed on.
    pub client: u32,
    /// What the proxy and the upstream agreed on.
    pub upstream: u32,
}

impl Caps {
    pub fn deprecate_eof(&self) -> bool {
        self.client & CLIENT_DEPRECATE_EOF != 0
    }
    pub fn client_session_track(&self) -> bool {
        self.client & CLIENT_SESSION_TRACK != 0
    }
    pub fn upstream_session_track(&self) -> bool {
        self.upstream & CLIENT_SESSION_TRACK != 0
    }
}

/// Server status flags.
pub mod status {
    pub const IN_TRANS: u16 = 0x0001;
    pub const AUTOCOMMIT: u16 = 0x0002;
    pub const MORE_RESULTS_EXISTS: u16 = 0x0008;
    pub const CURSOR_EXISTS: u16 = 0x0040;
    pub const LAST_ROW_SENT: u16 = 0x0080;
    pub const IN_TRANS_READONLY: u16 = 0x2000;
    pub const SESSION_STATE_CHANGED: u16 = 0x4000;
}
