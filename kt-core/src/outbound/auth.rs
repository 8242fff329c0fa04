//! Per-session credentials of the local proxies
//! ([`ConnectOptions::proxy_auth`](crate::ConnectOptions::proxy_auth)): made from the
//! thread-local CSPRNG when the session starts, checked in constant time, carried in
//! the proxy URLs of [`Session::env`](crate::Session::env), never logged.

use std::fmt;

use base64::Engine as _;
use rand::RngExt as _;
use rand::distr::Alphanumeric;
use subtle::ConstantTimeEq as _;

/// Length of the random user name.
const USER_LEN: usize = 12;
/// Length of the random password: 32 characters of `[A-Za-z0-9]`, about 190 bits.
const PASSWORD_LEN: usize = 32;

/// The realm the HTTP proxy names in `Proxy-Authenticate`.
pub(crate) const REALM: &str = "kt";

/// A user name and password that the session's proxies require. Both are
/// `[A-Za-z0-9]` only, so they go into a URL's userinfo as they are.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ProxyCredentials {
    user: String,
    password: String,
}

impl fmt::Debug for ProxyCredentials {
    /// The user name; the password redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyCredentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl ProxyCredentials {
    /// Fresh random credentials from `rand`'s thread-local generator (a CSPRNG seeded
    /// from the operating system, the one that makes the session's SSH keys).
    pub(crate) fn generate() -> ProxyCredentials {
        let random = |len| -> String {
            rand::rng()
                .sample_iter(Alphanumeric)
                .take(len)
                .map(char::from)
                .collect()
        };
        ProxyCredentials {
            user: random(USER_LEN),
            password: random(PASSWORD_LEN),
        }
    }

    /// `user:password@`, to put before the host of a URL.
    pub(crate) fn userinfo(&self) -> String {
        format!("{}:{}@", self.user, self.password)
    }

    /// Whether `user` and `password` are these, compared in constant time (both are
    /// always compared; only their lengths, which are public, can end it early).
    pub(crate) fn matches(&self, user: &[u8], password: &[u8]) -> bool {
        let same = self.user.as_bytes().ct_eq(user) & self.password.as_bytes().ct_eq(password);
        bool::from(same)
    }

    /// Whether a `Proxy-Authorization` header value is `Basic` with these
    /// credentials (RFC 7617: the scheme is case-insensitive, the token is the base64 of
    /// `user:password`).
    pub(crate) fn matches_basic(&self, header: &[u8]) -> bool {
        let Some((scheme, token)) = split_scheme(header) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"basic") {
            return false;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(token) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return false;
        };
        self.matches(&decoded[..colon], &decoded[colon + 1..])
    }

    /// The `Proxy-Authenticate` challenge of the HTTP proxy.
    pub(crate) fn challenge() -> String {
        format!("Basic realm=\"{REALM}\", charset=\"UTF-8\"")
    }
}

/// `(scheme, token)` of an `Authorization`-style header value, blanks trimmed.
fn split_scheme(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let value = value.trim_ascii();
    let space = value.iter().position(|&b| b == b' ' || b == b'\t')?;
    let (scheme, rest) = value.split_at(space);
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some((scheme, token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, password: &str) -> String {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {token}")
    }

    #[test]
    fn credentials_are_random_url_safe_and_long() {
        let a = ProxyCredentials::generate();
        let b = ProxyCredentials::generate();
        assert_ne!(a, b);
        assert_ne!(a.password, b.password);
        assert_eq!(a.user.len(), USER_LEN);
        assert_eq!(a.password.len(), PASSWORD_LEN);
        assert!(
            a.userinfo()
                .trim_end_matches('@')
                .split_once(':')
                .is_some_and(|(u, p)| u
                    .bytes()
                    .chain(p.bytes())
                    .all(|c| c.is_ascii_alphanumeric()))
        );
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = ProxyCredentials::generate();
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains(&c.password), "{shown}");
        assert!(
            shown.contains(&c.user) && shown.contains("redacted"),
            "{shown}"
        );
    }

    #[test]
    fn only_the_exact_user_and_password_match() {
        let c = ProxyCredentials::generate();
        assert!(c.matches(c.user.as_bytes(), c.password.as_bytes()));
        assert!(!c.matches(c.user.as_bytes(), b"wrong"));
        assert!(!c.matches(b"wrong", c.password.as_bytes()));
        assert!(!c.matches(c.user.as_bytes(), &c.password.as_bytes()[1..]));
        assert!(!c.matches(b"", b""));
    }

    #[test]
    fn basic_headers_are_read_as_rfc_7617_says() {
        let c = ProxyCredentials::generate();
        let good = basic(&c.user, &c.password);
        assert!(c.matches_basic(good.as_bytes()));
        assert!(c.matches_basic(good.replace("Basic", "bAsIc").as_bytes()));
        assert!(c.matches_basic(format!("  {good}  ").as_bytes()));
        for bad in [
            basic(&c.user, "wrong"),
            basic("wrong", &c.password),
            basic(&c.user, &format!("{}x", c.password)),
            good.replace("Basic", "Bearer"),
            "Basic".to_owned(),
            "Basic !!!".to_owned(),
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(&c.password)
            ),
            String::new(),
        ] {
            assert!(!c.matches_basic(bad.as_bytes()), "{bad}");
        }
    }
}
