//! Loading the host key and the `authorized_keys` file.

use std::path::Path;

use russh::keys::ssh_key::{PrivateKey, PublicKey};

use crate::Error;

/// Reads the host private key (OpenSSH format, unencrypted).
///
/// # Errors
///
/// [`Error::ReadFile`], [`Error::HostKey`] or [`Error::HostKeyEncrypted`].
pub fn load_host_key(path: &Path) -> Result<PrivateKey, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
        what: "host key",
        path: path.to_owned(),
        source,
    })?;
    let key = PrivateKey::from_openssh(text.trim()).map_err(|source| Error::HostKey {
        path: path.to_owned(),
        source,
    })?;
    if key.is_encrypted() {
        return Err(Error::HostKeyEncrypted {
            path: path.to_owned(),
        });
    }
    Ok(key)
}

/// The public keys allowed to log in.
#[derive(Debug, Clone, Default)]
pub struct AuthorizedKeys {
    keys: Vec<PublicKey>,
}

impl AuthorizedKeys {
    /// Reads an `authorized_keys` file.
    ///
    /// # Errors
    ///
    /// [`Error::ReadFile`], or any error of [`AuthorizedKeys::parse`].
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
            what: "authorized_keys file",
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses `authorized_keys` text: one OpenSSH public key per line; blank lines and
    /// `#` comments are skipped. `path` is only used in error messages.
    ///
    /// # Errors
    ///
    /// [`Error::AuthorizedKeysLine`] for a line that is not a key,
    /// [`Error::AuthorizedKeysOptions`] for a key with options (which would not be
    /// enforced), [`Error::NoAuthorizedKeys`] if no key is found.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Error> {
        let mut keys = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match PublicKey::from_openssh(line) {
                Ok(key) => keys.push(key),
                Err(source) => {
                    let first = line.split_whitespace().next().unwrap_or_default();
                    let rest_is_key = line
                        .split_once(char::is_whitespace)
                        .is_some_and(|(_, rest)| PublicKey::from_openssh(rest.trim()).is_ok());
                    if rest_is_key {
                        return Err(Error::AuthorizedKeysOptions {
                            path: path.to_owned(),
                            line: index + 1,
                            options: first.to_owned(),
                        });
                    }
                    return Err(Error::AuthorizedKeysLine {
                        path: path.to_owned(),
                        line: index + 1,
                        source,
                    });
                }
            }
        }
        if keys.is_empty() {
            return Err(Error::NoAuthorizedKeys {
                path: path.to_owned(),
            });
        }
        Ok(AuthorizedKeys { keys })
    }

    /// Whether `key` is one of the authorized keys: same algorithm and same key data
    /// (comments are ignored).
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.keys
            .iter()
            .any(|k| k.algorithm() == key.algorithm() && k.key_data() == key.key_data())
    }

    /// How many keys are authorized.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is authorized (never true for a parsed file).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPDBp3khpUoQDgs/jC6tYksSwC/LKe35IRMRz4hAr1x4 a@x";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN+CPjJ5Kcn/Hm2zN0Ehqrq02FK9HbW3N9m9gs/5+GLb b@y";

    fn parse(text: &str) -> Result<AuthorizedKeys, Error> {
        AuthorizedKeys::parse(text, Path::new("/etc/kt/authorized_keys"))
    }

    fn key(line: &str) -> Option<PublicKey> {
        PublicKey::from_openssh(line).ok()
    }

    #[test]
    fn keys_are_matched_by_data_not_comment() {
        let keys = parse(&format!("# kt session\n\n{KEY_A}\n")).ok();
        assert_eq!(keys.as_ref().map(AuthorizedKeys::len), Some(1));
        let a_renamed = KEY_A.replace("a@x", "other-comment");
        let (Some(keys), Some(a), Some(b)) = (keys, key(&a_renamed), key(KEY_B)) else {
            panic!("test keys do not parse");
        };
        assert!(keys.contains(&a));
        assert!(!keys.contains(&b));
    }

    #[test]
    fn an_empty_file_is_refused() {
        let msg = parse("# nothing\n\n").err().map(|e| e.to_string());
        assert!(msg.is_some_and(|m| m.contains("holds no public key")));
    }

    #[test]
    fn a_garbage_line_is_refused_with_its_number() {
        let msg = parse(&format!("{KEY_A}\nnot a key\n"))
            .err()
            .map(|e| e.to_string());
        assert!(msg.is_some_and(|m| m.contains("line 2")));
    }

    #[test]
    fn key_options_are_refused_rather_than_ignored() {
        let err = parse(&format!("from=\"10.0.0.1\" {KEY_A}\n")).err();
        assert!(
            matches!(err, Some(Error::AuthorizedKeysOptions { line: 1, .. })),
            "{err:?}"
        );
    }
}
