//! The key ring: the shared secrets that authenticate every datagram.
//!
//! # Key file format
//!
//! A TOML file, readable only by the daemons (mode 0640 root:ringwatch, or 0600; any looser
//! mode is refused, see [`crate::secret_file`]):
//!
//! ```toml
//! # Key used to seal outgoing datagrams.
//! primary = 2
//!
//! # Every key listed here is accepted on input, so a new key can be rolled out
//! # everywhere before it becomes primary, and an old one removed afterwards.
//! [[keys]]
//! id = 1
//! secret = "<64 hex digits: 32 random bytes>"
//!
//! [[keys]]
//! id = 2
//! secret = "<64 hex digits>"
//! ```
//!
//! Rotation: (1) add key 2 to every host's file, keep `primary = 1`, restart or reload;
//! (2) set `primary = 2` everywhere; (3) remove key 1.

use crate::ids::KeyId;
use serde::Deserialize;
use std::fmt;
use std::path::Path;

/// Length of a secret key in bytes.
pub const KEY_LEN: usize = 32;

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("key file: {0}")]
    Read(#[from] crate::secret_file::SecretFileError),
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("key file is not valid TOML: {0}")]
    Syntax(String),
    #[error("key {id}: secret must be {expected} hex digits ({reason})")]
    BadSecret {
        id: u16,
        expected: usize,
        reason: String,
    },
    #[error("key {0} is listed twice")]
    DuplicateId(u16),
    #[error("primary key {0} is not among the keys")]
    MissingPrimary(u16),
    #[error("key file lists no keys")]
    Empty,
}

/// A set of keys by id; one of them (the primary) seals outgoing datagrams, all of them
/// are accepted on input.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<(KeyId, [u8; KEY_LEN])>,
    /// Index of the primary key in `keys`.
    primary: usize,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets.
        f.debug_struct("KeyRing")
            .field(
                "ids",
                &self.keys.iter().map(|(id, _)| id.0).collect::<Vec<_>>(),
            )
            .field("primary", &self.keys[self.primary].0 .0)
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    primary: u16,
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: u16,
    secret: String,
}

impl KeyRing {
    /// Builds a key ring from keys and the id of the primary key.
    pub fn new(primary: KeyId, keys: Vec<(KeyId, [u8; KEY_LEN])>) -> Result<KeyRing, KeyFileError> {
        if keys.is_empty() {
            return Err(KeyFileError::Empty);
        }
        for (i, (id, _)) in keys.iter().enumerate() {
            if keys[..i].iter().any(|(other, _)| other == id) {
                return Err(KeyFileError::DuplicateId(id.0));
            }
        }
        let primary = keys
            .iter()
            .position(|(id, _)| *id == primary)
            .ok_or(KeyFileError::MissingPrimary(primary.0))?;
        Ok(KeyRing { keys, primary })
    }

    /// Parses a key file's text (format in the module docs).
    pub fn from_toml_str(text: &str) -> Result<KeyRing, KeyFileError> {
        let file: KeyFile =
            toml::from_str(text).map_err(|e| KeyFileError::Syntax(e.to_string()))?;
        let mut keys = Vec::with_capacity(file.keys.len());
        for entry in file.keys {
            let bytes = hex::decode(entry.secret.trim()).map_err(|e| KeyFileError::BadSecret {
                id: entry.id,
                expected: KEY_LEN * 2,
                reason: e.to_string(),
            })?;
            let secret: [u8; KEY_LEN] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeyFileError::BadSecret {
                        id: entry.id,
                        expected: KEY_LEN * 2,
                        reason: format!("got {} bytes", bytes.len()),
                    })?;
            keys.push((KeyId(entry.id), secret));
        }
        KeyRing::new(KeyId(file.primary), keys)
    }

    /// Reads and parses a key file; refuses one with loose permission bits
    /// ([`crate::secret_file::read_secret_file`]).
    pub fn load(path: &Path) -> Result<KeyRing, KeyFileError> {
        let text = crate::secret_file::read_secret_file(path)?;
        KeyRing::from_toml_str(&text)
    }

    /// The id and secret used to seal outgoing datagrams.
    pub fn primary(&self) -> (KeyId, &[u8; KEY_LEN]) {
        let (id, secret) = &self.keys[self.primary];
        (*id, secret)
    }

    /// The secret of a key id, if the ring holds it.
    pub fn get(&self, id: KeyId) -> Option<&[u8; KEY_LEN]> {
        self.keys.iter().find(|(k, _)| *k == id).map(|(_, s)| s)
    }

    /// The ids of every key held.
    pub fn ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.iter().map(|(id, _)| *id)
    }

    /// Renders this key ring as key file text.
    pub fn to_toml_string(&self) -> String {
        let mut out = String::from(
            "# Ringwatch key file: keep it secret (mode 0600).\n\
             # `primary` seals outgoing datagrams; every listed key is accepted on input.\n",
        );
        out.push_str(&format!("primary = {}\n", self.keys[self.primary].0 .0));
        for (id, secret) in &self.keys {
            out.push_str(&format!(
                "\n[[keys]]\nid = {}\nsecret = \"{}\"\n",
                id.0,
                hex::encode(secret)
            ));
        }
        out
    }

    /// A new key ring with one random key of the given id.
    pub fn generate(id: KeyId) -> KeyRing {
        let mut secret = [0u8; KEY_LEN];
        rand::fill(&mut secret);
        KeyRing {
            keys: vec![(id, secret)],
            primary: 0,
        }
    }

    /// Writes a new key file with one random key, created with mode 0600; refuses to
    /// overwrite an existing file.
    pub fn write_new_key_file(path: &Path, id: KeyId) -> Result<KeyRing, KeyFileError> {
        use std::io::Write;
        let ring = KeyRing::generate(id);
        let write_err = |source| KeyFileError::Write {
            path: path.display().to_string(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(write_err)?;
        file.write_all(ring.to_toml_string().as_bytes())
            .and_then(|_| file.sync_all())
            .map_err(write_err)?;
        Ok(ring)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_text() {
        let ring = KeyRing::generate(KeyId(7));
        let parsed = KeyRing::from_toml_str(&ring.to_toml_string()).unwrap();
        assert_eq!(parsed.primary().0, KeyId(7));
        assert_eq!(parsed.primary().1, ring.primary().1);
    }

    #[test]
    fn rejects_bad_files() {
        let secret = "00".repeat(32);
        assert!(matches!(
            KeyRing::from_toml_str("primary = 1\nkeys = []"),
            Err(KeyFileError::Empty)
        ));
        let short = "primary = 1\n[[keys]]\nid = 1\nsecret = \"abcd\"\n";
        assert!(matches!(
            KeyRing::from_toml_str(short),
            Err(KeyFileError::BadSecret { id: 1, .. })
        ));
        let missing = format!("primary = 2\n[[keys]]\nid = 1\nsecret = \"{secret}\"\n");
        assert!(matches!(
            KeyRing::from_toml_str(&missing),
            Err(KeyFileError::MissingPrimary(2))
        ));
        let dup = format!(
            "primary = 1\n[[keys]]\nid = 1\nsecret = \"{secret}\"\n[[keys]]\nid = 1\nsecret = \"{secret}\"\n"
        );
        assert!(matches!(
            KeyRing::from_toml_str(&dup),
            Err(KeyFileError::DuplicateId(1))
        ));
        let unknown = format!("primary = 1\ncolour = 3\n[[keys]]\nid = 1\nsecret = \"{secret}\"\n");
        assert!(matches!(
            KeyRing::from_toml_str(&unknown),
            Err(KeyFileError::Syntax(_))
        ));
        assert!(matches!(
            KeyRing::from_toml_str("\u{0}garbage"),
            Err(KeyFileError::Syntax(_))
        ));
    }

    #[test]
    fn debug_hides_secrets() {
        let ring = KeyRing::generate(KeyId(1));
        let shown = format!("{ring:?}");
        assert!(!shown.contains(&hex::encode(ring.primary().1)));
    }

    #[test]
    fn new_key_file_is_private_and_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        let ring = KeyRing::write_new_key_file(&path, KeyId(3)).unwrap();
        let loaded = KeyRing::load(&path).unwrap();
        assert_eq!(loaded.primary().1, ring.primary().1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(KeyRing::write_new_key_file(&path, KeyId(3)).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.toml");
        KeyRing::write_new_key_file(&path, KeyId(1)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = KeyRing::load(&path).unwrap_err();
        assert!(err.to_string().contains("0644"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(KeyRing::load(&path).is_ok());
    }
}
