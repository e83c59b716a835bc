//! Bearer secrets: API tokens (`plt_`), host join tokens (`pjt_`) and host credentials
//! (`phc_`). A secret is `<prefix>_<ulid of its record>_<64 hex random>`; only its SHA-256
//! is stored, and comparisons are constant-time.
//!
//! Volume keys, which must be read back (a host needs one to make or open a volume), are
//! stored sealed instead: ChaCha20-Poly1305 under the server's key-encryption key
//! ([`VolumeKek`]), with the volume's id as associated data, so a sealed key copied onto
//! another volume's row does not open.

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

/// A fresh volume key: 64 hexadecimal characters (QEMU takes a LUKS secret as UTF-8 text).
pub fn volume_key() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

/// The server's key-encryption key for volume keys. Every replica must hold the same one
/// (a file beside the database or the blob directory, `volume.kek`); without it no
/// encrypted volume can be made or opened.
#[derive(Clone)]
pub struct VolumeKek([u8; 32]);

impl std::fmt::Debug for VolumeKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VolumeKek(<redacted>)")
    }
}

impl VolumeKek {
    /// A random key (tests; a server that keeps volumes loads its file).
    pub fn generate() -> VolumeKek {
        let mut k = [0u8; 32];
        rand::fill(&mut k);
        VolumeKek(k)
    }

    /// Reads the key from `path` (64 hexadecimal characters), making the file (mode 0600,
    /// a new random key) when it does not exist.
    pub fn load_or_create(path: &std::path::Path) -> std::io::Result<VolumeKek> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let bad =
            |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {why}", path.display()));
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let raw = hex::decode(text.trim()).map_err(|_| bad("not hexadecimal"))?;
                let k: [u8; 32] = raw.try_into().map_err(|_| bad("not 32 bytes (64 hexadecimal characters)"))?;
                Ok(VolumeKek(k))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let k = VolumeKek::generate();
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
                f.write_all(format!("{}\n", hex::encode(k.0)).as_bytes())?;
                f.sync_all()?;
                Ok(k)
            }
            Err(e) => Err(e),
        }
    }

    fn cipher(&self) -> chacha20poly1305::ChaCha20Poly1305 {
        use chacha20poly1305::KeyInit;
        chacha20poly1305::ChaCha20Poly1305::new(&chacha20poly1305::Key::from(self.0))
    }

    /// Seals `key` for the volume `volume_id`: hex(nonce ‖ ciphertext).
    pub fn seal(&self, volume_id: &str, key: &str) -> String {
        use chacha20poly1305::aead::{Aead, Payload};
        let mut nonce = [0u8; 12];
        rand::fill(&mut nonce);
        let payload = Payload { msg: key.as_bytes(), aad: volume_id.as_bytes() };
        // Encryption fails only past ChaCha20's length limit, far above a 64-byte key.
        let sealed = self.cipher().encrypt(&chacha20poly1305::Nonce::from(nonce), payload).unwrap_or_default();
        hex::encode([nonce.as_slice(), &sealed].concat())
    }

    /// Opens a key sealed for `volume_id` (`None`: not sealed by this key, or for another
    /// volume).
    pub fn open(&self, volume_id: &str, sealed: &str) -> Option<String> {
        use chacha20poly1305::aead::{Aead, Payload};
        let raw = hex::decode(sealed).ok()?;
        if raw.len() < 12 {
            return None;
        }
        let (nonce, ct) = raw.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().ok()?;
        let plain = self
            .cipher()
            .decrypt(&chacha20poly1305::Nonce::from(nonce), Payload { msg: ct, aad: volume_id.as_bytes() })
            .ok()?;
        String::from_utf8(plain).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_volume_key_opens_only_for_its_volume_and_its_kek() {
        let kek = VolumeKek::generate();
        let key = volume_key();
        assert_eq!(key.len(), 64);
        let sealed = kek.seal("vol_a", &key);
        assert!(!sealed.contains(&key), "the key does not appear in clear");
        assert_eq!(kek.open("vol_a", &sealed).as_deref(), Some(key.as_str()));
        assert_eq!(kek.open("vol_b", &sealed), None, "bound to its volume");
        assert_eq!(VolumeKek::generate().open("vol_a", &sealed), None, "and to its KEK");
        assert_ne!(kek.seal("vol_a", &key), sealed, "a fresh nonce each time");
    }

    #[test]
    fn the_kek_file_is_made_private_once_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("plinth-kek-{}", std::process::id()));
        let path = dir.join("volume.kek");
        let _ = std::fs::remove_dir_all(&dir);
        let a = VolumeKek::load_or_create(&path).expect("made");
        let mode = std::fs::metadata(&path).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = VolumeKek::load_or_create(&path).expect("read");
        assert_eq!(a.0, b.0);
        std::fs::write(&path, "nothex").expect("overwrite");
        assert!(VolumeKek::load_or_create(&path).is_err(), "a damaged file is refused, never replaced");
        let _ = std::fs::remove_dir_all(&dir);
    }

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
