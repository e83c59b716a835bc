//! Bearer secrets: API tokens (`plt_`), host join tokens (`pjt_`) and host credentials
//! (`phc_`). A secret is `<prefix>_<ulid of its record>_<64 hex random>`; only its SHA-256
//! is stored, and comparisons are constant-time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of API tokens.
pub const API_TOKEN: &str = "plt";
/// Prefix of host join tokens.
pub const JOIN_TOKEN: &str = "pjt";
/// Prefix of per-host credentials.
pub const HOST_CREDENTIAL: &str = "phc";

/// Makes the secret for the record `record_id` (`tok_01…`), e.g. `plt_01…_9f…`.
pub fn mint(prefix: &str, record_id: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let ulid = record_id.split_once('_').map(|(_, u)| u).unwrap_or(record_id);
    format!("{prefix}_{ulid}_{}", hex::encode(bytes))
}

/// Splits a presented secret into the record id (with `record_prefix`) it names.
pub fn record_id(secret: &str, prefix: &str, record_prefix: &str) -> Option<String> {
    let rest = secret.strip_prefix(prefix)?.strip_prefix('_')?;
    let (ulid, random) = rest.split_once('_')?;
    if ulid.len() != 26 || random.len() != 64 || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let id = format!("{record_prefix}_{ulid}");
    plinth_api::is_id_of(record_prefix, &id).then_some(id)
}

/// Hex SHA-256 of a secret, as stored.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` hashes to `stored`, compared in constant time.
pub fn verify(secret: &str, stored: &str) -> bool {
    hash(secret).as_bytes().ct_eq(stored.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_secrets_name_their_record_and_verify() {
        let id = plinth_api::TokenId::generate();
        let s = mint(API_TOKEN, id.as_str());
        assert!(s.starts_with("plt_"));
        assert_eq!(record_id(&s, API_TOKEN, "tok").as_deref(), Some(id.as_str()));
        let h = hash(&s);
        assert!(verify(&s, &h));
        assert!(!verify(&format!("{s}0"), &h));
        assert_ne!(mint(API_TOKEN, id.as_str()), s, "random part differs");
        assert!(record_id("plt_short_abc", API_TOKEN, "tok").is_none());
        assert!(record_id(&s, JOIN_TOKEN, "hjt").is_none());
    }
}
