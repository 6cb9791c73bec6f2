//! Strings that must never reach a log, an error message or `Debug` output, and files only
//! their owner may read.

use std::{fmt, path::Path};

use subtle::ConstantTimeEq;

/// A secret value (Vault token, secret_id). Prints as `***`; compares in constant time.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value that must never be printed.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The value, for the one place that sends it (an HTTP header to Vault).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl Eq for Secret {}

/// Writes a new file only its owner can read (mode 0600 on Unix), refusing to replace one that
/// exists (`AlreadyExists`): private keys and the EAB secret.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hvs.topsecret");
        assert!(!format!("{s:?} {s}").contains("topsecret"));
        assert_eq!(s.expose(), "hvs.topsecret");
        assert_eq!(s, Secret::new("hvs.topsecret"));
        assert_ne!(s, Secret::new("hvs.other"));
    }
}
