//! Reading secret files (key file, cluster secret, admin token) with a permission check.
//!
//! Every daemon reads its secrets through [`read_secret_file`], which refuses a file that
//! other users could read or that anyone but its owner could change. The documented mode is
//! **0640, owner root, group `ringwatch`** (the systemd units run as user `ringwatch` and
//! read the files through the group); 0600 (or anything stricter) is accepted too. Refused:
//! any bit in [`FORBIDDEN_MODE_BITS`] (group write, and read, write or execute for others).

use std::io::Read;
use std::path::Path;

/// The mode every secret file should have (owner root, group `ringwatch`).
pub const SECRET_FILE_MODE: u32 = 0o640;

/// Permission bits that make a secret file unacceptable: group write and every bit for
/// others.
pub const FORBIDDEN_MODE_BITS: u32 = 0o027;

/// Largest secret file read (a key file with many keys stays far below this).
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Why a secret file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file could not be opened or read.
    #[error("cannot read secret file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// Other users may read the file, or users other than its owner may change it.
    #[error(
        "secret file {path} has mode {mode:04o}: it must not be readable by others nor \
         writable by group or others; expected {expected:04o} (owner root, group ringwatch) \
         or 0600 (chmod {expected:04o} {path})"
    )]
    LooseMode {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
        /// The documented mode ([`SECRET_FILE_MODE`]).
        expected: u32,
    },
    /// The file is larger than [`MAX_SECRET_FILE_BYTES`] or not UTF-8.
    #[error("secret file {path}: {reason}")]
    Content {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// Checks permission bits (only the lowest 9 are looked at) against the rule above.
pub fn check_mode(path: &Path, mode: u32) -> Result<(), SecretFileError> {
    let mode = mode & 0o777;
    if mode & FORBIDDEN_MODE_BITS != 0 {
        return Err(SecretFileError::LooseMode {
            path: path.display().to_string(),
            mode,
            expected: SECRET_FILE_MODE,
        });
    }
    Ok(())
}

/// Opens a secret file, checks the mode of what was opened (so a file swapped in between
/// cannot slip through), and reads it as text.
pub fn read_secret_file(path: &Path) -> Result<String, SecretFileError> {
    let read_err = |source| SecretFileError::Read {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        check_mode(path, meta.permissions().mode())?;
    }
    if meta.len() > MAX_SECRET_FILE_BYTES {
        return Err(SecretFileError::Content {
            path: path.display().to_string(),
            reason: format!("larger than {MAX_SECRET_FILE_BYTES} bytes"),
        });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    String::from_utf8(bytes).map_err(|_| SecretFileError::Content {
        path: path.display().to_string(),
        reason: "not UTF-8 text".into(),
    })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file_with_mode(dir: &Path, mode: u32) -> std::path::PathBuf {
        let path = dir.join(format!("secret-{mode:o}"));
        std::fs::write(&path, "s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn private_modes_are_read() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o640, 0o400, 0o440, 0o700] {
            let path = file_with_mode(dir.path(), mode);
            assert_eq!(
                read_secret_file(&path).unwrap(),
                "s3cret\n",
                "mode {mode:o}"
            );
        }
    }

    #[test]
    fn loose_modes_are_refused_with_path_mode_and_expected_mode() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o604, 0o660, 0o620, 0o601, 0o602, 0o666, 0o777] {
            let path = file_with_mode(dir.path(), mode);
            let err = read_secret_file(&path).unwrap_err();
            assert!(
                matches!(err, SecretFileError::LooseMode { mode: m, .. } if m == mode),
                "mode {mode:o}: {err}"
            );
            let text = err.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains(&format!("{mode:04o}")), "{text}");
            assert!(text.contains("0640"), "{text}");
        }
    }

    #[test]
    fn missing_and_oversized_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            read_secret_file(&dir.path().join("absent")),
            Err(SecretFileError::Read { .. })
        ));
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_SECRET_FILE_BYTES as usize + 1]).unwrap();
        std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            read_secret_file(&big),
            Err(SecretFileError::Content { .. })
        ));
    }
}
