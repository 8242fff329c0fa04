//! VPN mode settings: [`VpnOptions`] and [`DnsMode`].

use std::net::{Ipv4Addr, SocketAddr};

use ipnet::IpNet;

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
    /// another loopback address on port 53).
    pub fn dns_listen(mut self, addr: SocketAddr) -> Self {
        self.dns_listen = Some(addr);
        self
    }
}
