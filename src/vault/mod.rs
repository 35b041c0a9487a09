//! Vault HTTP client (placeholder, being written).
