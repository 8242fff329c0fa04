//! The host key and the keys allowed to log in: made in memory and given on the
//! command line (`serve --authorized-key`, what the shadow pod runs), or loaded from
//! files (`--host-key`, `--authorized-keys`).

use std::path::Path;

use russh::keys::ssh_key::{Algorithm, PrivateKey, PublicKey};

use crate::Error;

/// A fresh Ed25519 host key pair, made in memory from the operating system's random
/// source. It lives only in this process: it is never written anywhere, and only its
/// public half is reported ([`host_key_line`]).
///
/// # Errors
///
/// [`Error::GenerateHostKey`] if the key cannot be made.
pub fn generate_host_key() -> Result<PrivateKey, Error> {
    let mut rng = rand::rng();
    PrivateKey::random(&mut rng, Algorithm::Ed25519)
        .map_err(|source| Error::GenerateHostKey { source })
}

/// The log line reporting `host_key`'s public half
/// ([`kt_proto::shadow::host_key_log_line`]), without the line break.
///
/// # Errors
///
/// [`Error::GenerateHostKey`] if the public key cannot be written in OpenSSH format.
pub fn host_key_line(host_key: &PrivateKey) -> Result<String, Error> {
    let public = host_key
        .public_key()
        .to_openssh()
        .map_err(|source| Error::GenerateHostKey { source })?;
    Ok(kt_proto::shadow::host_key_log_line(&public))
}

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
    /// The one key given with `--authorized-key` (an OpenSSH public key line).
    ///
    /// # Errors
    ///
    /// [`Error::AuthorizedKeyArg`] if it is not a public key.
    pub fn from_arg(line: &str) -> Result<Self, Error> {
        let key =
            PublicKey::from_openssh(line.trim()).map_err(|source| Error::AuthorizedKeyArg {
                value: line.to_owned(),
                source,
            })?;
        Ok(AuthorizedKeys { keys: vec![key] })
    }

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
    fn a_made_host_key_is_fresh_ed25519_and_its_line_carries_only_the_public_half() {
        let (Ok(a), Ok(b)) = (generate_host_key(), generate_host_key()) else {
            panic!("key generation failed");
        };
        assert_eq!(a.algorithm(), Algorithm::Ed25519);
        assert_ne!(a.public_key().key_data(), b.public_key().key_data());
        let line = host_key_line(&a).unwrap_or_default();
        let reported = kt_proto::shadow::reported_host_key(&format!("{line}\n"))
            .and_then(|k| PublicKey::from_openssh(k).ok());
        assert_eq!(
            reported.as_ref().map(PublicKey::key_data),
            Some(a.public_key().key_data())
        );
        assert!(!line.contains("PRIVATE"), "{line}");
    }

    #[test]
    fn the_command_line_key_is_the_only_one_authorized() {
        let keys = AuthorizedKeys::from_arg(KEY_A).ok();
        assert_eq!(keys.as_ref().map(AuthorizedKeys::len), Some(1));
        let (Some(keys), Some(a), Some(b)) = (keys, key(KEY_A), key(KEY_B)) else {
            panic!("test keys do not parse");
        };
        assert!(keys.contains(&a));
        assert!(!keys.contains(&b));
        let msg = AuthorizedKeys::from_arg("ssh-ed25519 not-base64")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("--authorized-key"), "{msg}");
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
