//! A mesh rule and a request, from arbitrary text: the rule's first line, then the
//! request's path, then `name:value` header lines.
//!
//! - a rule that parses prints (Display) to text that parses to an equal rule, which
//!   prints the same again (canonical form);
//! - matching never panics, and the router's table (which hands only the headers some
//!   rule names to the matcher) picks exactly what matching every header would.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use kt_proto::mesh::{Request, Rule};
use kt_shadow::router::proxy::{Route, Table};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let rule_text = lines.next().unwrap_or_default();
    let path = lines.next().unwrap_or_default();
    let headers: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once(':')).collect();

    let Ok(rule) = rule_text.parse::<Rule>() else {
        return;
    };
    let printed = rule.to_string();
    let again: Rule = printed
        .parse()
        .unwrap_or_else(|e| panic!("{rule_text:?} printed as {printed:?}, which fails: {e}"));
    assert_eq!(again, rule, "{rule_text:?} printed as {printed:?}");
    assert_eq!(again.to_string(), printed);

    // Matching with every header (any case, invalid ones too).
    let all = Request::new(path, headers.iter().map(|(n, v)| (*n, v.as_bytes())));
    let matched = rule.matches(&all);

    // The router's table, given the same request as an HTTP header map.
    let mut map = HeaderMap::new();
    let mut valid = Vec::new();
    for (n, v) in &headers {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(n.as_bytes()), HeaderValue::from_str(v)) {
            map.append(name, value);
            valid.push((*n, v.as_bytes()));
        }
    }
    let complete = valid.len() == headers.len();
    let expected = rule.matches(&Request::new(path, valid));
    let table = Table {
        routes: vec![
            Route {
                name: "fuzzed".to_owned(),
                rule: rule.clone(),
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            },
            Route {
                name: "everything".to_owned(),
                rule: "/".parse().expect("valid rule"),
                addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            },
        ],
    };
    let picked = table.route(path, &map).map(|r| r.name.as_str());
    let fallback = path.starts_with('/').then_some("everything");
    assert_eq!(picked, if expected { Some("fuzzed") } else { fallback });
    // Only headers hyper refuses can make a difference.
    if complete {
        assert_eq!(matched, expected);
    }
});
