//! Loading a daemon's TOML configuration, and the one error type every daemon reports
//! configuration problems with.

use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Why a configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not valid TOML for the daemon's schema (syntax, types, unknown keys).
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its position.
        source: toml::de::Error,
    },
    /// A value parses but makes no sense (out of range, missing, contradictory).
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A file the configuration names (key file, cluster secret, token) is unusable.
    #[error(transparent)]
    Secret(Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl ConfigError {
    /// A secret file named by the configuration could not be used.
    pub fn secret(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        ConfigError::Secret(Box::new(e))
    }
}

/// Reads and parses the TOML file at `path`.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[allow(dead_code)]
        port: u16,
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.toml");
        let e = load_toml::<Sample>(&missing).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }));
        assert!(e.to_string().contains("missing.toml"), "{e}");
        assert!(e.to_string().starts_with("cannot read config file"), "{e}");

        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "port = 1\nextra = 2\n").unwrap();
        let e = load_toml::<Sample>(&bad).unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }));
        assert!(e.to_string().contains("extra"), "{e}");
        assert!(e.to_string().starts_with("invalid config file"), "{e}");

        let good = dir.path().join("good.toml");
        std::fs::write(&good, "port = 7\n").unwrap();
        assert!(load_toml::<Sample>(&good).is_ok());
    }
}
