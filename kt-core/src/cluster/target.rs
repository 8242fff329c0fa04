//! Forward targets: a Service, a pod, a DNS name or an IP address.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use crate::cluster::{Cluster, map_error};
use crate::error::{Error, Result};

/// What [`Session::forward`](crate::Session::forward) connects to.
///
/// Parsed from text ([`FromStr`]):
///
/// | text | target |
/// |---|---|
/// | `10.96.0.12`, `fd00::1` | that address |
/// | `svc/web`, `service/web`, `svc/web.other-ns` | the Service's ClusterIP (looked up in the API; a headless Service by DNS) |
/// | `pod/web-0` | the pod's IP (looked up in the API, in the session's namespace) |
/// | `web`, `web.other-ns`, `web.other-ns.svc.cluster.local` | resolved through the cluster DNS with the namespace search list |
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// An IP address.
    Ip(IpAddr),
    /// A Service, in the session's namespace unless one is given.
    Service {
        /// The Service's name.
        name: String,
        /// Its namespace (default: the session's).
        namespace: Option<String>,
    },
    /// A pod, in the session's namespace unless one is given.
    Pod {
        /// The pod's name.
        name: String,
        /// Its namespace (default: the session's).
        namespace: Option<String>,
    },
    /// A DNS name, resolved in the cluster.
    Name(String),
}

impl FromStr for Target {
    type Err = Error;

    fn from_str(s: &str) -> Result<Target> {
        let invalid = |reason: &str| Error::InvalidTarget {
            target: s.to_owned(),
            reason: reason.to_owned(),
        };
        let text = s.trim();
        if text.is_empty() {
            return Err(invalid("it is empty"));
        }
        if let Ok(ip) = text
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(Target::Ip(ip));
        }
        if let Some((kind, rest)) = text.split_once('/') {
            if rest.is_empty() || rest.contains('/') {
                return Err(invalid("expected `kind/name`"));
            }
            return match kind {
                "svc" | "service" | "services" => {
                    let (name, namespace) = match rest.split_once('.') {
                        Some((name, ns)) if !ns.is_empty() && !ns.contains('.') => {
                            (name, Some(ns.to_owned()))
                        }
                        Some(_) => return Err(invalid("write `svc/name` or `svc/name.namespace`")),
                        None => (rest, None),
                    };
                    check_label(name).map_err(|r| invalid(&r))?;
                    Ok(Target::Service {
                        name: name.to_owned(),
                        namespace,
                    })
                }
                "pod" | "pods" | "po" => Ok(Target::Pod {
                    name: rest.to_owned(),
                    namespace: None,
                }),
                _ => Err(invalid(&format!(
                    "unknown kind `{kind}`: expected `svc` or `pod`"
                ))),
            };
        }
        if text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Ok(Target::Name(text.to_ascii_lowercase()));
        }
        Err(invalid(
            "not an IP address, `svc/name`, `pod/name` or DNS name",
        ))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Ip(ip) => write!(f, "{ip}"),
            Target::Service {
                name,
                namespace: None,
            } => write!(f, "svc/{name}"),
            Target::Service {
                name,
                namespace: Some(ns),
            } => write!(f, "svc/{name}.{ns}"),
            Target::Pod {
                name,
                namespace: None,
            } => write!(f, "pod/{name}"),
            Target::Pod {
                name,
                namespace: Some(ns),
            } => write!(f, "{ns}/pod/{name}"),
            Target::Name(n) => f.write_str(n),
        }
    }
}

impl TryFrom<&str> for Target {
    type Error = Error;
    fn try_from(s: &str) -> Result<Target> {
        s.parse()
    }
}

impl TryFrom<String> for Target {
    type Error = Error;
    fn try_from(s: String) -> Result<Target> {
        s.parse()
    }
}

impl From<IpAddr> for Target {
    fn from(ip: IpAddr) -> Target {
        Target::Ip(ip)
    }
}

fn check_label(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not a valid Service name"))
    }
}

/// Where a target's connections go: a host (IP or DNS name, resolved per connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Destination {
    Ip(IpAddr),
    Name(String),
}

impl Target {
    /// Looks the target up in the API where needed.
    pub(crate) async fn destination(
        &self,
        cluster: &Cluster,
        cluster_domain: &str,
    ) -> Result<Destination> {
        match self {
            Target::Ip(ip) => Ok(Destination::Ip(*ip)),
            Target::Name(name) => Ok(Destination::Name(name.clone())),
            Target::Service { name, namespace } => {
                let ns = namespace.as_deref().unwrap_or(&cluster.namespace);
                let svc = cluster.services_in(ns).get_opt(name).await.map_err(|e| {
                    map_error(
                        e,
                        &cluster.server,
                        ns,
                        "get",
                        "services",
                        &format!("`{name}`"),
                    )
                })?;
                let Some(svc) = svc else {
                    return Err(Error::TargetNotFound {
                        kind: "Service",
                        name: name.clone(),
                        namespace: ns.to_owned(),
                        detail: String::new(),
                    });
                };
                let ip = svc
                    .spec
                    .and_then(|s| s.cluster_ip)
                    .filter(|ip| !ip.is_empty() && ip != "None")
                    .and_then(|ip| ip.parse::<IpAddr>().ok());
                Ok(match ip {
                    Some(ip) => Destination::Ip(ip),
                    // Headless: the DNS name gives the pods.
                    None => Destination::Name(format!("{name}.{ns}.svc.{cluster_domain}.")),
                })
            }
            Target::Pod { name, namespace } => {
                let ns = namespace.as_deref().unwrap_or(&cluster.namespace);
                let api: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
                let pod = api.get_opt(name).await.map_err(|e| {
                    map_error(e, &cluster.server, ns, "get", "pods", &format!("`{name}`"))
                })?;
                let Some(pod) = pod else {
                    return Err(Error::TargetNotFound {
                        kind: "pod",
                        name: name.clone(),
                        namespace: ns.to_owned(),
                        detail: String::new(),
                    });
                };
                let ip = pod
                    .status
                    .and_then(|s| s.pod_ip)
                    .and_then(|ip| ip.parse::<IpAddr>().ok());
                match ip {
                    Some(ip) => Ok(Destination::Ip(ip)),
                    None => Err(Error::TargetNotFound {
                        kind: "pod",
                        name: name.clone(),
                        namespace: ns.to_owned(),
                        detail: "it has no IP address yet (is it running?)".to_owned(),
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Option<Target> {
        s.parse().ok()
    }

    #[test]
    fn every_documented_form_parses() {
        assert_eq!(
            parse("10.96.0.12"),
            Some(Target::Ip([10, 96, 0, 12].into()))
        );
        assert!(matches!(
            parse("[fd00::1]"),
            Some(Target::Ip(IpAddr::V6(_)))
        ));
        assert_eq!(
            parse("svc/web"),
            Some(Target::Service {
                name: "web".to_owned(),
                namespace: None
            })
        );
        assert_eq!(
            parse("service/web.other"),
            Some(Target::Service {
                name: "web".to_owned(),
                namespace: Some("other".to_owned())
            })
        );
        assert_eq!(
            parse("pod/web-0"),
            Some(Target::Pod {
                name: "web-0".to_owned(),
                namespace: None
            })
        );
        assert_eq!(
            parse("Web.Other"),
            Some(Target::Name("web.other".to_owned()))
        );
    }

    #[test]
    fn bad_targets_are_refused_with_the_forms_that_work() {
        for bad in [
            "",
            "deploy/web",
            "svc/",
            "svc/Web",
            "svc/a.b.c",
            "a b",
            "pod/x/y",
        ] {
            let err = bad
                .parse::<Target>()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("svc/web"), "`{bad}`: {err}");
        }
    }
}
