//! Local password verification (the application's fixed credential).
//!
//! sqlease never needs the local password in clear: like a MySQL server it
//! keeps, per user, SHA1(SHA1(pw)) for mysql_native_password and
//! SHA256(SHA256(pw)) for caching_sha2_password. A challenge response lets
//! the server recover SHA1(pw) (resp. SHA256(pw)) and check its hash;
//! the stored verifier alone is not enough to log in.
//! Comparisons are constant time.

use sha1::{Digest, Sha1};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::secret::{ExposeSecret, SecretString};

/// Prefix of the verifier format printed by `sqlease hash-password`.
const VERIFIER_PREFIX: &str = "$sqlease$1$";

/// What sqlease stores to verify a local password.
#[derive(Clone)]
pub struct PasswordVerifier {
    /// SHA1(SHA1(password)).
    sha1_stage2: [u8; 20],
    /// SHA256(SHA256(password)).
    sha256_stage2: [u8; 32],
}

impl std::fmt::Debug for PasswordVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordVerifier([REDACTED])")
    }
}

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    let mut out = [0u8; 20];
    out.copy_from_slice(&h.finalize());
    out
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&h.finalize());
    out
}

impl PasswordVerifier {
    /// Builds the verifier of a clear password.
    pub fn from_password(pw: &SecretString) -> PasswordVerifier {
        let p = pw.expose_secret().as_bytes();
        let s1 = sha1(&[p]);
        let s256 = sha256(&[p]);
        PasswordVerifier {
            sha1_stage2: sha1(&[&s1]),
            sha256_stage2: sha256(&[&s256]),
        }
    }

    /// Parses `$sqlease$1$<hex sha1 stage2>$<hex sha256 stage2>`.
    pub fn parse(s: &str) -> Option<PasswordVerifier> {
        let rest = s.trim().strip_prefix(VERIFIER_PREFIX)?;
        let (a, b) = rest.split_once('$')?;
        let a = hex::decode(a).ok()?;
        let b = hex::decode(b).ok()?;
        Some(PasswordVerifier {
            sha1_stage2: a.try_into().ok()?,
            sha256_stage2: b.try_into().ok()?,
        })
    }

    /// The text form printed by `sqlease hash-password`.
    pub fn encode(&self) -> String {
        format!(
            "{VERIFIER_PREFIX}{}${}",
            hex::encode(self.sha1_stage2),
            hex::encode(self.sha256_stage2)
        )
    }

    /// Checks a mysql_native_password scramble response.
    pub fn verify_native(&self, nonce: &[u8], response: &[u8]) -> bool {
        if response.len() != 20 {
            return false;
        }
        // response = SHA1(pw) XOR SHA1(nonce + SHA1(SHA1(pw)))
        let mask = sha1(&[nonce, &self.sha1_stage2]);
        let mut stage1 = [0u8; 20];
        for i in 0..20 {
            stage1[i] = response[i] ^ mask[i];
        }
        sha1(&[&stage1]).ct_eq(&self.sha1_stage2).into()
    }

    /// Checks a caching_sha2_password fast-path scramble response.
    pub fn verify_sha2_fast(&self, nonce: &[u8], response: &[u8]) -> bool {
        if response.len() != 32 {
            return false;
        }
        // response = SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) + nonce)
        let mask = sha256(&[&self.sha256_stage2, nonce]);
        let mut stage1 = [0u8; 32];
        for i in 0..32 {
            stage1[i] = response[i] ^ mask[i];
        }
        sha256(&[&stage1]).ct_eq(&self.sha256_stage2).into()
    }

    /// Checks a clear-text password (caching_sha2 full authentication over TLS).
    pub fn verify_clear(&self, password: &[u8]) -> bool {
        let p = password.strip_suffix(&[0]).unwrap_or(password);
        sha256(&[&sha256(&[p])]).ct_eq(&self.sha256_stage2).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_common::auth::plugins::{
        caching_sha2_password::scramble_sha256, mysql_native_password::scramble_native,
    };

    #[test]
    fn native_and_sha2_round_trip_against_mysql_common() {
        let pw = SecretString::from("s3cret-pw");
        let v = PasswordVerifier::from_password(&pw);
        let nonce = *b"abcdefghij0123456789";
        let r = scramble_native(&nonce, b"s3cret-pw").unwrap();
        assert!(v.verify_native(&nonce, &r));
        assert!(!v.verify_native(&nonce, &scramble_native(&nonce, b"wrong").unwrap()));
        let r2 = scramble_sha256(&nonce, b"s3cret-pw").unwrap();
        assert!(v.verify_sha2_fast(&nonce, &r2));
        assert!(!v.verify_sha2_fast(&nonce, &scramble_sha256(&nonce, b"x").unwrap()));
        assert!(v.verify_clear(b"s3cret-pw\0"));
        assert!(!v.verify_clear(b"s3cret-px"));
        assert!(!v.verify_native(&nonce, &[]));
    }

    #[test]
    fn encode_parse_round_trip_and_redacted_debug() {
        let v = PasswordVerifier::from_password(&SecretString::from("pw"));
        let s = v.encode();
        let back = PasswordVerifier::parse(&s).unwrap();
        assert_eq!(back.sha1_stage2, v.sha1_stage2);
        assert_eq!(back.sha256_stage2, v.sha256_stage2);
        assert!(!format!("{v:?}").contains(&hex::encode(v.sha1_stage2)));
        assert!(PasswordVerifier::parse("$sqlease$1$zz$zz").is_none());
        assert!(PasswordVerifier::parse("plain").is_none());
    }
}
