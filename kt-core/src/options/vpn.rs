//! VPN mode settings: [`VpnOptions`] and [`DnsMode`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use ipnet::IpNet;

use crate::error::{Error, Result};

/// How cluster names reach programs that use the system resolver (VPN mode only).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DnsMode {
    /// The best mode for this machine: [`DnsMode::Resolved`] where `/etc/resolv.conf`
    /// points at systemd-resolved's stub and `resolvectl` works, [`DnsMode::ResolverDir`]
    /// on macOS, else [`DnsMode::ResolvConf`] on Linux and [`DnsMode::Off`] elsewhere.
    #[default]
    Auto,
    /// Put the local DNS server first in `/etc/resolv.conf` (restored on close and at
    /// the next start after a crash).
    ResolvConf,
    /// systemd-resolved: the local DNS server and `~<cluster domain>` routing domains on
    /// the tun link only (gone with the link).
    Resolved,
    /// macOS: `/etc/resolver/<cluster domain>` and `/etc/resolver/svc` files (existing
    /// files are never overwritten).
    ResolverDir,
    /// Hosts-file entries for the Services of these namespaces (the session's namespace
    /// when empty), like kt-connect's `hosts` mode; no DNS server is installed.
    Hosts(Vec<String>),
    /// Leave the system resolver alone (the local DNS server still runs; see
    /// [`crate::Session::dns_addr`]).
    Off,
}

/// VPN mode settings: pass them to [`crate::ConnectOptions::vpn`].
#[derive(Debug, Clone)]
pub struct VpnOptions {
    pub(crate) include: Vec<IpNet>,
    pub(crate) exclude: Vec<IpNet>,
    pub(crate) tun_name: Option<String>,
    pub(crate) address: Ipv4Addr,
    pub(crate) mtu: u16,
    pub(crate) dns: DnsMode,
    pub(crate) dns_listen: Option<SocketAddr>,
    pub(crate) discover: bool,
}

impl Default for VpnOptions {
    fn default() -> Self {
        VpnOptions {
            include: Vec::new(),
            exclude: Vec::new(),
            tun_name: None,
            // RFC 2544's benchmarking range: almost never used by real networks.
            address: Ipv4Addr::new(198, 18, 0, 1),
            mtu: DEFAULT_MTU,
            dns: DnsMode::Auto,
            dns_listen: None,
            discover: true,
        }
    }
}

/// The tun device's default MTU: large, because packets never leave the machine (the
/// device only feeds kt's own stack) and each packet costs the userspace stack the same
/// work whatever its size. Measured in the lab, 256 MiB through the VPN: 35 MB/s at
/// 1500, 83 MB/s at 9000, 115 MB/s at 65000.
pub const DEFAULT_MTU: u16 = 65000;

impl VpnOptions {
    /// Default settings: routes discovered from the cluster, DNS [`DnsMode::Auto`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Also route this range into the cluster (added to the discovered ones).
    pub fn include(mut self, net: IpNet) -> Self {
        self.include.push(net);
        self
    }

    /// Never route this range into the cluster (taken out of every route).
    pub fn exclude(mut self, net: IpNet) -> Self {
        self.exclude.push(net);
        self
    }

    /// Route only the [`VpnOptions::include`] ranges; ask the cluster for none.
    pub fn no_discovery(mut self) -> Self {
        self.discover = false;
        self
    }

    /// The tun device's name (default: the kernel picks `kt0`, `kt1`, ...).
    pub fn tun_name(mut self, name: impl Into<String>) -> Self {
        self.tun_name = Some(name.into());
        self
    }

    /// The tun device's own address (default 198.18.0.1).
    pub fn address(mut self, address: Ipv4Addr) -> Self {
        self.address = address;
        self
    }

    /// The tun device's MTU (default [`DEFAULT_MTU`]).
    pub fn mtu(mut self, mtu: u16) -> Self {
        self.mtu = mtu;
        self
    }

    /// How the system resolver learns cluster names (default [`DnsMode::Auto`]).
    pub fn dns(mut self, mode: DnsMode) -> Self {
        self.dns = mode;
        self
    }

    /// Where the local DNS server listens (default: 127.0.0.1:53 when free, else
    /// another loopback address on port 53; the tun address in
    /// [`DnsMode::Resolved`]). Wherever it listens, it answers only this machine:
    /// loopback, the tun device's address and this address (unless a wildcard);
    /// queries from other sources get no answer.
    pub fn dns_listen(mut self, addr: SocketAddr) -> Self {
        self.dns_listen = Some(addr);
        self
    }
}

impl DnsMode {
    /// The spellings [`DnsMode`]'s `FromStr` accepts, for help texts.
    pub const SPELLINGS: &'static str =
        "auto, resolv-conf, resolved, resolver-dir, hosts, hosts:<ns1>,<ns2>, off";
}

impl fmt::Display for DnsMode {
    /// The spelling `FromStr` reads back: `auto`, `resolv-conf`, `resolved`,
    /// `resolver-dir`, `hosts` or `hosts:ns1,ns2`, `off`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsMode::Auto => f.write_str("auto"),
            DnsMode::ResolvConf => f.write_str("resolv-conf"),
            DnsMode::Resolved => f.write_str("resolved"),
            DnsMode::ResolverDir => f.write_str("resolver-dir"),
            DnsMode::Hosts(ns) if ns.is_empty() => f.write_str("hosts"),
            DnsMode::Hosts(ns) => write!(f, "hosts:{}", ns.join(",")),
            DnsMode::Off => f.write_str("off"),
        }
    }
}

impl FromStr for DnsMode {
    type Err = Error;

    /// Parses the spellings [`DnsMode`]'s `Display` writes (case-insensitive; `_`
    /// may stand for `-`). `hosts:a,b` lists the namespaces whose Services go into
    /// the hosts file.
    fn from_str(s: &str) -> Result<DnsMode> {
        let text = s.trim().to_ascii_lowercase().replace('_', "-");
        let mode = match text.as_str() {
            "auto" => DnsMode::Auto,
            "resolv-conf" | "resolvconf" => DnsMode::ResolvConf,
            "resolved" => DnsMode::Resolved,
            "resolver-dir" => DnsMode::ResolverDir,
            "hosts" => DnsMode::Hosts(Vec::new()),
            "off" => DnsMode::Off,
            other => match other.strip_prefix("hosts:") {
                Some(list) => {
                    let namespaces: Vec<String> = s.trim()[6..]
                        .split(',')
                        .map(str::trim)
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned)
                        .collect();
                    if namespaces.is_empty() || list.is_empty() {
                        return Err(invalid("DNS mode", s, DnsMode::SPELLINGS));
                    }
                    DnsMode::Hosts(namespaces)
                }
                None => return Err(invalid("DNS mode", s, DnsMode::SPELLINGS)),
            },
        };
        Ok(mode)
    }
}

/// Parses a range to route: CIDR (`10.96.0.0/12`, `fd00::/64`) or a single address
/// (`10.96.0.10`, a /32 or /128). The one parser every front end uses.
///
/// # Errors
///
/// [`Error::InvalidArgument`] naming the value and the accepted forms.
pub fn parse_net(s: &str) -> Result<IpNet> {
    let text = s.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(invalid(
        "CIDR",
        s,
        "address/prefix (10.96.0.0/12, fd00::/64) or a single address (10.96.0.10)",
    ))
}

fn invalid(what: &str, value: &str, expected: &str) -> Error {
    Error::InvalidArgument {
        what: what.to_owned(),
        value: value.to_owned(),
        expected: expected.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_modes_read_back_what_they_write() {
        for mode in [
            DnsMode::Auto,
            DnsMode::ResolvConf,
            DnsMode::Resolved,
            DnsMode::ResolverDir,
            DnsMode::Hosts(Vec::new()),
            DnsMode::Hosts(vec!["a".to_owned(), "b-2".to_owned()]),
            DnsMode::Off,
        ] {
            assert_eq!(mode.to_string().parse::<DnsMode>().ok(), Some(mode));
        }
        assert_eq!(
            "RESOLV_CONF".parse::<DnsMode>().ok(),
            Some(DnsMode::ResolvConf)
        );
        assert_eq!(
            "hosts: a , b".parse::<DnsMode>().ok(),
            Some(DnsMode::Hosts(vec!["a".to_owned(), "b".to_owned()]))
        );
        for bad in ["", "dns", "hosts:", "hosts:,", "resolv"] {
            let err = bad.parse::<DnsMode>().unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
            assert!(err.to_string().contains("resolv-conf"), "{err}");
        }
    }

    #[test]
    fn nets_are_cidrs_or_single_addresses() {
        assert_eq!(
            parse_net("10.96.0.0/12").unwrap().to_string(),
            "10.96.0.0/12"
        );
        assert_eq!(parse_net(" fd00::/64 ").unwrap().to_string(), "fd00::/64");
        assert_eq!(
            parse_net("10.96.0.10").unwrap().to_string(),
            "10.96.0.10/32"
        );
        assert_eq!(parse_net("::1").unwrap().to_string(), "::1/128");
        for bad in ["", "10.96.0.0/33", "web", "10.96.0.0/"] {
            let err = parse_net(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument, "{bad}");
        }
    }
}
