//! Mesh routing: which requests a developer takes ([`Rule`]), and the names by which
//! the router (`kt-shadow route`) finds the developers' shadows.
//!
//! A rule is one or more clauses, all of which (`&&`) or any of which (`||`) must hold:
//!
//! | clause | matches a request |
//! |---|---|
//! | `NAME=VALUE` or `NAME:VALUE` | with a header `NAME` whose value is exactly `VALUE` |
//! | `NAME~REGEX` | with a header `NAME` whose value matches `REGEX` (unanchored; use `^…$`) |
//! | `/PREFIX` | whose path starts with `/PREFIX` |
//!
//! Header names are compared case-insensitively (they are written lower case). The
//! `NAME:VALUE` form is kt-connect's `--versionMark`. The text form is what the client
//! writes on the developer's shadow ([`RULE_ANNOTATION`]) and what the router reads back.
//!
//! ```
//! use kt_proto::mesh::{Request, Rule};
//!
//! let rule: Rule = "version:alice".parse()?;
//! assert_eq!(rule.to_string(), "version=alice");
//! assert_eq!(rule.header(), Some(("version", "alice")));
//!
//! let req = Request::new("/api/users", [("Version", &b"alice"[..])]);
//! assert!(rule.matches(&req));
//! assert!(!rule.matches(&Request::new("/api/users", [])));
//!
//! let both: Rule = "x-dev~^bo(b|ris)$ && /api".parse()?;
//! assert!(both.matches(&Request::new("/api/x", [("x-dev", &b"boris"[..])])));
//! assert!(!both.matches(&Request::new("/web", [("x-dev", &b"bob"[..])])));
//! # Ok::<(), kt_proto::Error>(())
//! ```

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// Label on a developer's mesh shadow (and on the router) naming the meshed Service.
pub const SERVICE_LABEL: &str = "kt.dev/mesh";

/// Label on the router pod: the selector the meshed Service points at while meshed.
pub const ROUTER_LABEL: &str = "kt.dev/router";

/// Annotation on a developer's mesh shadow: its [`Rule`] in text form.
pub const RULE_ANNOTATION: &str = "kt.dev/mesh-rule";

/// Annotation the router keeps on its own pod: a JSON array of the names of the
/// developers' shadow pods it currently routes to, in match order.
pub const ROUTES_ANNOTATION: &str = "kt.dev/mesh-routes";

/// The header of a rule made when the caller gives none (kt-connect's version mark).
pub const DEFAULT_HEADER: &str = "version";

/// Longest rule text accepted (it lives in an annotation and is matched per request).
pub const MAX_RULE_LEN: usize = 1024;

/// Most clauses in one rule.
pub const MAX_CLAUSES: usize = 16;

/// How clauses combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// Every clause must match (`&&`).
    All,
    /// At least one clause must match (`||`).
    Any,
}

/// One condition on a request.
#[derive(Debug, Clone)]
pub enum Clause {
    /// A header (lower-case name) with exactly this value.
    HeaderEquals {
        /// Lower-case header name.
        name: String,
        /// The value, compared byte for byte.
        value: String,
    },
    /// A header (lower-case name) whose value matches the regex.
    HeaderRegex {
        /// Lower-case header name.
        name: String,
        /// Matched against each value of the header (UTF-8 values only).
        regex: regex_lite::Regex,
    },
    /// A path starting with this prefix (which starts with `/`).
    PathPrefix(String),
}

impl PartialEq for Clause {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for Clause {}

impl fmt::Display for Clause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Clause::HeaderEquals { name, value } => write!(f, "{name}={value}"),
            Clause::HeaderRegex { name, regex } => write!(f, "{name}~{}", regex.as_str()),
            Clause::PathPrefix(prefix) => f.write_str(prefix),
        }
    }
}

/// Which requests one developer takes. Parse it from text ([`FromStr`]); print it
/// back with [`Display`](fmt::Display) (canonical form: `=` for header equality,
/// clauses joined by ` && ` or ` || `).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    combine: Combine,
    clauses: Vec<Clause>,
}

/// What a rule is matched against: a request's path and headers.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    path: &'a str,
    headers: Vec<(&'a str, &'a [u8])>,
}

impl<'a> Request<'a> {
    /// A request with this path (without the query string, or with it: only the
    /// prefix is compared) and these headers (any case).
    pub fn new(path: &'a str, headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        Request {
            path,
            headers: headers.into_iter().collect(),
        }
    }

    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a [u8]> + 's {
        (self.headers.iter())
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

impl Rule {
    /// The rule kt makes when the caller gives none: header [`DEFAULT_HEADER`] equal to
    /// `value` (a random mark the caller then sends).
    pub fn version_mark(value: &str) -> Rule {
        Rule {
            combine: Combine::All,
            clauses: vec![Clause::HeaderEquals {
                name: DEFAULT_HEADER.to_owned(),
                value: value.to_owned(),
            }],
        }
    }

    /// How the clauses combine.
    pub fn combine(&self) -> Combine {
        self.combine
    }

    /// The clauses, in the order given.
    pub fn clauses(&self) -> &[Clause] {
        &self.clauses
    }

    /// The first header-equality clause as `(name, value)`: the header a caller sends
    /// to be routed by this rule, when it has one.
    pub fn header(&self) -> Option<(&str, &str)> {
        self.clauses.iter().find_map(|c| match c {
            Clause::HeaderEquals { name, value } => Some((name.as_str(), value.as_str())),
            _ => None,
        })
    }

    /// Whether two rules claim the same requests by the same header value (two
    /// developers must not both route `version=alice`): some header-equality clause
    /// is in both.
    pub fn shares_header_value(&self, other: &Rule) -> Option<(String, String)> {
        self.clauses.iter().find_map(|c| match c {
            Clause::HeaderEquals { name, value } if other.clauses.contains(c) => {
                Some((name.clone(), value.clone()))
            }
            _ => None,
        })
    }

    /// Whether the request matches.
    pub fn matches(&self, request: &Request<'_>) -> bool {
        let one = |clause: &Clause| match clause {
            Clause::HeaderEquals { name, value } => {
                request.values(name).any(|v| v == value.as_bytes())
            }
            Clause::HeaderRegex { name, regex } => request
                .values(name)
                .any(|v| std::str::from_utf8(v).is_ok_and(|v| regex.is_match(v))),
            Clause::PathPrefix(prefix) => request.path.starts_with(prefix.as_str()),
        };
        match self.combine {
            Combine::All => self.clauses.iter().all(one),
            Combine::Any => self.clauses.iter().any(one),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sep = match self.combine {
            Combine::All => " && ",
            Combine::Any => " || ",
        };
        for (i, clause) in self.clauses.iter().enumerate() {
            if i > 0 {
                f.write_str(sep)?;
            }
            write!(f, "{clause}")?;
        }
        Ok(())
    }
}

fn invalid(text: &str, reason: impl Into<String>) -> Error {
    Error::InvalidRule {
        rule: text.chars().take(80).collect(),
        reason: reason.into(),
    }
}

/// A header name: an HTTP token (RFC 9110), lower-cased.
fn header_name(text: &str, name: &str) -> Result<String, Error> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(invalid(
            text,
            format!("`{name}` is not a header name (letters, digits and !#$%&'*+-.^_`|~)"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

fn clause(text: &str, part: &str) -> Result<Clause, Error> {
    if part.starts_with('/') {
        if part
            .chars()
            .any(|c| c.is_ascii_whitespace() || c.is_ascii_control())
        {
            return Err(invalid(text, format!("path prefix `{part}` has a space")));
        }
        return Ok(Clause::PathPrefix(part.to_owned()));
    }
    let Some(at) = part.find(['=', ':', '~']) else {
        return Err(invalid(
            text,
            format!(
                "`{part}` is neither `header=value`, `header:value`, `header~regex` nor a \
                 path prefix starting with `/`"
            ),
        ));
    };
    let name = header_name(text, part[..at].trim())?;
    let value = part[at + 1..].trim();
    if value.is_empty() {
        return Err(invalid(
            text,
            format!("header `{name}` has no value to match"),
        ));
    }
    if value.bytes().any(|b| b.is_ascii_control()) {
        return Err(invalid(
            text,
            format!("header `{name}`: control character in value"),
        ));
    }
    if part.as_bytes()[at] == b'~' {
        let regex = regex_lite::RegexBuilder::new(value)
            .size_limit(1 << 16)
            .build()
            .map_err(|e| invalid(text, format!("header `{name}`: bad regex: {e}")))?;
        Ok(Clause::HeaderRegex { name, regex })
    } else {
        Ok(Clause::HeaderEquals {
            name,
            value: value.to_owned(),
        })
    }
}

impl FromStr for Rule {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() > MAX_RULE_LEN {
            return Err(invalid(text, format!("longer than {MAX_RULE_LEN} bytes")));
        }
        let (combine, parts): (Combine, Vec<&str>) =
            match (text.contains("&&"), text.contains("||")) {
                (true, true) => {
                    return Err(invalid(
                        text,
                        "mixes `&&` and `||`; a rule is all of its clauses or any of them",
                    ));
                }
                (false, true) => (Combine::Any, text.split("||").collect()),
                _ => (Combine::All, text.split("&&").collect()),
            };
        if parts.len() > MAX_CLAUSES {
            return Err(invalid(text, format!("more than {MAX_CLAUSES} clauses")));
        }
        let clauses = parts
            .iter()
            .map(|p| p.trim())
            .map(|p| {
                if p.is_empty() {
                    Err(invalid(text, "empty clause (e.g. `version=alice`)"))
                } else {
                    clause(text, p)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rule = Rule { combine, clauses };
        // The canonical form (what is written to the annotation and read back) adds
        // spaces around `&&`/`||`: it must fit too, or the rule would not read back.
        let canonical = rule.to_string().len();
        if canonical > MAX_RULE_LEN {
            return Err(invalid(
                text,
                format!(
                    "longer than {MAX_RULE_LEN} bytes once written in canonical form \
                     ({canonical} bytes, clauses joined by ` && ` or ` || `)"
                ),
            ));
        }
        Ok(rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> Rule {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn text_round_trips_in_canonical_form() {
        for (given, canonical) in [
            ("version:abc", "version=abc"),
            ("Version = abc", "version=abc"),
            ("x-dev~^a.*$", "x-dev~^a.*$"),
            ("/api", "/api"),
            ("a=1&&b=2", "a=1 && b=2"),
            ("a=1 || /v2 || c~x", "a=1 || /v2 || c~x"),
            ("tag=a:b=c", "tag=a:b=c"),
        ] {
            let parsed = rule(given);
            assert_eq!(parsed.to_string(), canonical);
            assert_eq!(rule(canonical), parsed);
        }
    }

    #[test]
    fn matching_follows_the_combination() {
        let all = rule("version=a && /api");
        let any = rule("version=a || /api");
        let hdr = [("VERSION", &b"a"[..])];
        assert!(all.matches(&Request::new("/api/x", hdr)));
        assert!(!all.matches(&Request::new("/web", hdr)));
        assert!(any.matches(&Request::new("/web", hdr)));
        assert!(any.matches(&Request::new("/api", [])));
        assert!(!any.matches(&Request::new("/web", [("version", &b"b"[..])])));
        // Any of a repeated header's values.
        let two = [("version", &b"b"[..]), ("version", &b"a"[..])];
        assert!(rule("version=a").matches(&Request::new("/", two)));
        // Not UTF-8: never matches a regex, still compared as bytes for equality.
        let raw = [("x", &b"\xff"[..])];
        assert!(!rule("x~.").matches(&Request::new("/", raw)));
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        for (text, says) in [
            ("", "empty clause"),
            ("a=1 && b=2 || c=3", "mixes"),
            ("version", "neither"),
            ("ver sion=1", "not a header name"),
            ("version=", "no value"),
            ("x~(", "bad regex"),
            ("a=1 &&", "empty clause"),
            ("/a b", "space"),
        ] {
            let err = text.parse::<Rule>().err().map(|e| e.to_string());
            let err = err.unwrap_or_default();
            assert!(err.contains(says), "{text:?}: {err}");
        }
        let long = "a=".to_owned() + &"x".repeat(MAX_RULE_LEN);
        assert!(long.parse::<Rule>().is_err());
    }

    #[test]
    fn a_rule_that_parses_reads_back_from_its_canonical_form() {
        // 16 clauses joined by bare `&&`: 1022 bytes as given, 1052 in canonical form
        // (found by the mesh_rule fuzz target).
        let clause = format!("a={}", "x".repeat(60));
        let tight = vec![clause.as_str(); MAX_CLAUSES].join("&&");
        assert!(tight.len() <= MAX_RULE_LEN);
        let err = tight.parse::<Rule>().err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .unwrap_or_default()
                .contains("canonical form"),
            "{err:?}"
        );
        // Within the limit either way: parses, and its canonical form parses equal.
        let clause = format!("a={}", "x".repeat(55));
        let fits = vec![clause.as_str(); MAX_CLAUSES].join("&&");
        let rule = rule(&fits);
        assert_eq!(rule.to_string().parse::<Rule>().unwrap(), rule);
    }

    #[test]
    fn header_and_shared_values() {
        let a = rule("/api && version=a");
        assert_eq!(a.header(), Some(("version", "a")));
        assert_eq!(rule("/api").header(), None);
        assert_eq!(
            a.shares_header_value(&rule("version=a")),
            Some(("version".to_owned(), "a".to_owned()))
        );
        assert_eq!(a.shares_header_value(&rule("version=b")), None);
        assert_eq!(Rule::version_mark("x").to_string(), "version=x");
    }
}
