//! Secrets at rest: the secret values of stored pipeline definitions (S3 `secret_key`, IBM
//! `api_key`, analyzer passwords, an inline TLS client key) are sealed with AES-256-GCM before
//! they reach the database, and opened when a pipeline is built. The API never returns them.
//!
//! The key is `SLUICE_SECRET_KEY` (32 bytes, base64), else `<data_dir>/secret-key`, created with
//! mode 0600 on first start. A sealed value names its key (the first 8 hex digits of the key's
//! SHA-256), so a key can be rotated: start once with the new key in `SLUICE_SECRET_KEY` and the
//! old one in `SLUICE_SECRET_KEY_PREVIOUS` (or `<data_dir>/secret-key.previous`); every stored
//! secret is sealed again under the new key at start (README "Security model").

use std::path::Path;

use base64::Engine as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};

/// Environment variable holding the current key (base64 of 32 bytes).
pub const KEY_ENV: &str = "SLUICE_SECRET_KEY";
/// Environment variable holding earlier keys, separated by commas or spaces.
pub const PREVIOUS_KEYS_ENV: &str = "SLUICE_SECRET_KEY_PREVIOUS";
/// The key file created in the data folder when no key is configured.
pub const KEY_FILE: &str = "secret-key";
/// Earlier keys, one per line, for a rotation.
pub const PREVIOUS_KEYS_FILE: &str = "secret-key.previous";
/// What starts a sealed value.
const PREFIX: &str = "sluice-sealed:v1:";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Why a key could not be loaded or a value opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A configured key is not 32 bytes of base64.
    #[error("{source_name}: a secret key is 32 bytes in base64 (e.g. `openssl rand -base64 32`)")]
    BadKey {
        /// Where it came from.
        source_name: String,
    },
    /// The key file could not be read or created.
    #[error("{path}: {message}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A sealed value under a key this server doesn't have.
    #[error(
        "sealed with key {0}, which this server does not have (see SLUICE_SECRET_KEY_PREVIOUS)"
    )]
    UnknownKey(String),
    /// A sealed value that doesn't open (corrupted, or moved to another field).
    #[error("a sealed value does not open")]
    Corrupt,
}

struct Key {
    id: String,
    key: LessSafeKey,
}

impl Key {
    fn from_bytes(bytes: &[u8]) -> Option<Key> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).ok()?;
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let id = digest.as_ref()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Some(Key {
            id,
            key: LessSafeKey::new(unbound),
        })
    }

    fn from_base64(text: &str, source_name: &str) -> Result<Key, SecretError> {
        B64.decode(text.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .and_then(|b| Key::from_bytes(&b))
            .ok_or_else(|| SecretError::BadKey {
                source_name: source_name.to_string(),
            })
    }
}

/// The current key and the earlier ones.
pub struct Keyring {
    current: Key,
    previous: Vec<Key>,
    rng: SystemRandom,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.id)
            .field("previous", &self.previous.len())
            .finish()
    }
}

impl Keyring {
    /// The server's keys: `SLUICE_SECRET_KEY`, else `<data_dir>/secret-key` (created, 0600);
    /// earlier keys from `SLUICE_SECRET_KEY_PREVIOUS` and `<data_dir>/secret-key.previous`.
    pub fn load(data_dir: &Path) -> Result<Keyring, SecretError> {
        let current = match std::env::var(KEY_ENV) {
            Ok(text) if !text.trim().is_empty() => Key::from_base64(&text, KEY_ENV)?,
            _ => key_file(&data_dir.join(KEY_FILE))?,
        };
        let mut previous = Vec::new();
        if let Ok(text) = std::env::var(PREVIOUS_KEYS_ENV) {
            for part in text
                .split([',', ' ', '\n'])
                .filter(|p| !p.trim().is_empty())
            {
                previous.push(Key::from_base64(part, PREVIOUS_KEYS_ENV)?);
            }
        }
        let path = data_dir.join(PREVIOUS_KEYS_FILE);
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                previous.push(Key::from_base64(line, &path.display().to_string())?);
            }
        }
        Ok(Keyring {
            current,
            previous,
            rng: SystemRandom::new(),
        })
    }

    /// A keyring of one random key (tests, dry runs of definitions never stored).
    pub fn ephemeral() -> Keyring {
        let rng = SystemRandom::new();
        let mut bytes = [0u8; 32];
        rng.fill(&mut bytes)
            .expect("the system's random source works");
        Keyring {
            current: Key::from_bytes(&bytes).expect("32 bytes make an AES-256 key"),
            previous: Vec::new(),
            rng,
        }
    }

    /// Seals `plaintext` for the field `field` (the field is authenticated with it, so a
    /// sealed value opens only where it was sealed).
    pub fn seal(&self, field: &str, plaintext: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .expect("the system's random source works");
        let mut data = plaintext.as_bytes().to_vec();
        self.current
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(field.as_bytes()),
                &mut data,
            )
            .expect("AES-GCM seals any length a definition can hold");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&data);
        format!("{PREFIX}{}:{}", self.current.id, B64.encode(blob))
    }

    /// Opens a value sealed by [`Keyring::seal`] for the same field.
    pub fn open(&self, field: &str, sealed: &str) -> Result<String, SecretError> {
        let rest = sealed.strip_prefix(PREFIX).ok_or(SecretError::Corrupt)?;
        let (id, blob) = rest.split_once(':').ok_or(SecretError::Corrupt)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| SecretError::UnknownKey(id.to_string()))?;
        let mut blob = B64.decode(blob).map_err(|_| SecretError::Corrupt)?;
        if blob.len() < NONCE_LEN {
            return Err(SecretError::Corrupt);
        }
        let data = blob.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&blob).map_err(|_| SecretError::Corrupt)?;
        let mut data = data;
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(field.as_bytes()), &mut data)
            .map_err(|_| SecretError::Corrupt)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SecretError::Corrupt)
    }

    /// Whether a sealed value was sealed under the current key.
    pub fn is_current(&self, sealed: &str) -> bool {
        sealed
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once(':'))
            .is_some_and(|(id, _)| id == self.current.id)
    }
}

/// Whether a value is sealed (as opposed to plaintext).
pub fn is_sealed(value: &str) -> bool {
    value.starts_with(PREFIX)
}

/// Reads the key file, or creates it with a new random key (mode 0600).
fn key_file(path: &Path) -> Result<Key, SecretError> {
    let file_error = |message: String| SecretError::KeyFile {
        path: path.display().to_string(),
        message,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => Key::from_base64(&text, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut bytes = [0u8; 32];
            SystemRandom::new()
                .fill(&mut bytes)
                .map_err(|_| file_error("no random source".into()))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| file_error(e.to_string()))?;
            writeln!(file, "{}", B64.encode(bytes))
                .and_then(|()| file.sync_all())
                .map_err(|e| file_error(e.to_string()))?;
            tracing::warn!(file = %path.display(), "No secret key configured: generated one. Back it up with the database.");
            Ok(Key::from_bytes(&bytes).expect("32 bytes make an AES-256 key"))
        }
        Err(e) => Err(file_error(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_for_its_field_and_key() {
        let ring = Keyring::ephemeral();
        let sealed = ring.seal("pipeline.write.s3.secret_key", "hunter2");
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("hunter2"));
        assert_ne!(sealed, ring.seal("pipeline.write.s3.secret_key", "hunter2"));
        assert_eq!(
            ring.open("pipeline.write.s3.secret_key", &sealed).unwrap(),
            "hunter2"
        );
        assert!(ring.open("pipeline.write.s3.api_key", &sealed).is_err());
        let other = Keyring::ephemeral();
        assert!(matches!(
            other.open("pipeline.write.s3.secret_key", &sealed),
            Err(SecretError::UnknownKey(_))
        ));
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push('A');
        assert!(
            ring.open("pipeline.write.s3.secret_key", &tampered)
                .is_err()
        );
    }

    #[test]
    fn the_key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let first = key_file(&dir.path().join(KEY_FILE)).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = key_file(&dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(first.id, again.id);
    }

    #[test]
    fn an_old_key_still_opens_and_is_told_apart() {
        let old = Keyring::ephemeral();
        let sealed = old.seal("f", "v");
        let new = Keyring {
            previous: vec![Key {
                id: old.current.id.clone(),
                key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[0u8; 32]).unwrap()),
            }],
            ..Keyring::ephemeral()
        };
        // The id matches but the key differs: it must not open.
        assert!(new.open("f", &sealed).is_err());
        let rotated = Keyring {
            previous: vec![old.current],
            ..Keyring::ephemeral()
        };
        assert_eq!(rotated.open("f", &sealed).unwrap(), "v");
        assert!(!rotated.is_current(&sealed));
        assert!(rotated.is_current(&rotated.seal("f", "v")));
        assert!(Key::from_base64("c2hvcnQ=", "test").is_err());
    }
}
