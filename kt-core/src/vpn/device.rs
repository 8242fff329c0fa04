//! The VPN's tun device: created (never persistent), given its address and MTU, brought
//! up, and given one route per routed range, all in the calling thread's network
//! namespace.
//!
//! The device is not persistent, so it lives exactly as long as its file descriptor:
//! when the process exits or crashes, the kernel deletes the device and with it its
//! address and every route through it. Nothing needs recovering at the next start.
//!
//! Linux only for now: elsewhere [`create`] fails with
//! [`Error::Unsupported`](crate::Error::Unsupported).

use std::io;
use std::net::Ipv4Addr;

use ipnet::IpNet;

use super::stack::PacketDevice;
use crate::cluster::ranges::KeepOut;
#[cfg(not(target_os = "linux"))]
use crate::error::Error;
use crate::error::Result;
use crate::options::VpnOptions;

/// A tun device, up, with its address and routes. Dropping it closes its descriptor,
/// which deletes the device (and so its routes).
pub(crate) struct Device {
    /// The name the kernel gave it.
    pub(crate) name: String,
    /// Its interface index.
    pub(crate) index: u32,
    /// Its IPv4 address (a /32).
    pub(crate) address: Ipv4Addr,
    /// Its MTU.
    pub(crate) mtu: u16,
    /// The packet interface.
    pub(crate) tun: Tun,
}

/// The packet interface of a tun device.
#[cfg(target_os = "linux")]
pub(crate) type Tun = tun::AsyncDevice;

/// No tun device outside Linux yet.
#[cfg(not(target_os = "linux"))]
pub(crate) enum Tun {}

#[cfg(target_os = "linux")]
impl PacketDevice for Tun {
    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        tun::AsyncDevice::recv(self, buf).await
    }

    async fn send(&self, packet: &[u8]) -> io::Result<usize> {
        tun::AsyncDevice::send(self, packet).await
    }
}

#[cfg(not(target_os = "linux"))]
impl PacketDevice for Tun {
    async fn recv(&self, _buf: &mut [u8]) -> io::Result<usize> {
        match *self {}
    }

    async fn send(&self, _packet: &[u8]) -> io::Result<usize> {
        match *self {}
    }
}

/// Creates the device in the calling thread's network namespace, sets its address
/// (`opts.address`/32) and MTU, brings it up and routes every range of `routes` through
/// it. On failure nothing is left behind (the half-made device goes with its
/// descriptor).
#[cfg(target_os = "linux")]
pub(crate) async fn create(opts: &VpnOptions, routes: &[IpNet]) -> Result<Device> {
    linux::create(opts, routes).await
}

/// VPN mode is Linux only for now.
#[cfg(not(target_os = "linux"))]
pub(crate) async fn create(_opts: &VpnOptions, _routes: &[IpNet]) -> Result<Device> {
    Err(Error::Unsupported {
        feature: "VPN mode",
        reason: "the tun device is implemented for Linux only so far; use proxy mode \
                 (the SOCKS5 and HTTP proxies, local forwards)"
            .to_owned(),
    })
}

/// The machine's local subnets (the prefix of every interface address) and the
/// gateways of its routes (every table, both families), in the calling thread's network
/// namespace: ranges VPN mode must never route, or the machine would lose its own
/// networks.
#[cfg(target_os = "linux")]
pub(crate) async fn local_networks() -> Result<Vec<KeepOut>> {
    linux::local_networks().await
}

/// No routes are made where no device can be made.
#[cfg(not(target_os = "linux"))]
pub(crate) async fn local_networks() -> Result<Vec<KeepOut>> {
    Ok(Vec::new())
}

/// Deletes the device `name` with index `index` if it still exists (its descriptor
/// normally took it away already). Safe to call when it is gone.
#[cfg(target_os = "linux")]
pub(crate) async fn remove(name: &str, index: u32) -> Result<()> {
    linux::remove(name, index).await
}

/// Nothing to remove where no device can be made.
#[cfg(not(target_os = "linux"))]
pub(crate) async fn remove(_name: &str, _index: u32) -> Result<()> {
    Ok(())
}

#[cfg(target_os = "linux")]
mod linux {
    use std::collections::HashMap;
    use std::io;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use futures::TryStreamExt as _;
    use ipnet::IpNet;
    use nix::errno::Errno;
    use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
    use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope};
    use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
    use tun::AbstractDevice as _;

    use super::Device;
    use crate::cluster::ranges::KeepOut;
    use crate::error::{Error, Result};
    use crate::options::VpnOptions;

    /// What kt was doing, for error messages.
    fn creating(name: &str) -> String {
        format!("create the tun device `{name}`")
    }

    /// Maps an OS error to [`Error::NeedsCapability`] when it is a refusal for lack of
    /// privileges, else to [`Error::Vpn`].
    fn os_error(action: String, e: io::Error) -> Error {
        match e.raw_os_error().map(Errno::from_raw) {
            Some(Errno::EPERM | Errno::EACCES) => Error::NeedsCapability {
                action,
                capability: "CAP_NET_ADMIN",
            },
            _ => Error::Vpn { action, source: e },
        }
    }

    /// Whether a netlink failure says "no such device".
    fn is_enodev(e: &rtnetlink::Error) -> bool {
        matches!(e, rtnetlink::Error::NetlinkError(msg) if msg.raw_code() == -(Errno::ENODEV as i32))
    }

    /// The device's name pattern when the caller gives none: the kernel replaces `%d`
    /// with the first free number (`kt0`, `kt1`, ...).
    const DEFAULT_NAME: &str = "kt%d";
    /// Linux limits interface names to 15 bytes.
    const MAX_NAME: usize = 15;
    /// The smallest MTU every IPv4 host must handle (RFC 791).
    const MIN_MTU_V4: u16 = 576;
    /// IPv6's minimum MTU (RFC 8200).
    const MIN_MTU_V6: u16 = 1280;

    /// A netlink connection whose driver task ends when it is dropped.
    struct Netlink {
        handle: Handle,
        driver: tokio::task::JoinHandle<()>,
    }

    impl Netlink {
        fn open(action: &str) -> Result<Netlink> {
            let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| Error::Vpn {
                action: format!("{action}: open a netlink socket"),
                source,
            })?;
            Ok(Netlink {
                handle,
                driver: tokio::spawn(conn),
            })
        }
    }

    impl Drop for Netlink {
        fn drop(&mut self) {
            self.driver.abort();
        }
    }

    /// The OS error inside a netlink failure.
    fn netlink_io(e: rtnetlink::Error) -> io::Error {
        match e {
            rtnetlink::Error::NetlinkError(msg) => msg.to_io(),
            other => io::Error::other(other.to_string()),
        }
    }

    /// The link called `name`, if any.
    async fn link_by_name(nl: &Netlink, name: &str) -> io::Result<Option<LinkMessage>> {
        let mut links = nl.handle.link().get().match_name(name.to_owned()).execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(e) if is_enodev(&e) => Ok(None),
            Err(e) => Err(netlink_io(e)),
        }
    }

    /// The link with index `index`, if any.
    async fn link_by_index(nl: &Netlink, index: u32) -> io::Result<Option<LinkMessage>> {
        let mut links = nl.handle.link().get().match_index(index).execute();
        match links.try_next().await {
            Ok(link) => Ok(link),
            Err(e) if is_enodev(&e) => Ok(None),
            Err(e) => Err(netlink_io(e)),
        }
    }

    fn link_name(link: &LinkMessage) -> Option<&str> {
        link.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.as_str()),
            _ => None,
        })
    }

    fn name_in_use(name: &str) -> Error {
        Error::Vpn {
            action: creating(name),
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "a network device named `{name}` already exists; choose another name with \
                     VpnOptions::tun_name, or leave it unset to let the kernel pick a free `ktN`"
                ),
            ),
        }
    }

    pub(super) async fn create(opts: &VpnOptions, routes: &[IpNet]) -> Result<Device> {
        let wanted = opts.tun_name.as_deref().unwrap_or(DEFAULT_NAME);
        if wanted.is_empty()
            || wanted.len() > MAX_NAME
            || wanted.contains(['/', ':'])
            || wanted.chars().any(char::is_whitespace)
        {
            return Err(Error::Vpn {
                action: creating(wanted),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a network device name has 1 to 15 characters, none of them `/`, `:` or \
                     white space",
                ),
            });
        }
        let min_mtu = if routes.iter().any(|r| matches!(r, IpNet::V6(_))) {
            MIN_MTU_V6
        } else {
            MIN_MTU_V4
        };
        if opts.mtu < min_mtu {
            return Err(Error::Vpn {
                action: creating(wanted),
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "MTU {} is too small: VpnOptions::mtu must be at least {MIN_MTU_V4}, \
                         and at least {MIN_MTU_V6} when IPv6 ranges are routed",
                        opts.mtu
                    ),
                ),
            });
        }
        let nl = Netlink::open(&creating(wanted))?;
        // TUNSETIFF would attach to an existing persistent tun device of that name
        // instead of making a new one; refuse any existing name up front.
        if opts.tun_name.is_some() {
            match link_by_name(&nl, wanted).await {
                Ok(None) => {}
                Ok(Some(_)) => return Err(name_in_use(wanted)),
                Err(e) => return Err(os_error(creating(wanted), e)),
            }
        }

        let mut config = tun::Configuration::default();
        config.tun_name(wanted).mtu(opts.mtu);
        // Only open the device here; netlink below sets the address, MTU and state, so
        // every step reports its own error.
        config.platform_config(|p| {
            p.ensure_root_privileges(false);
        });
        let tun = tun::create_as_async(&config).map_err(|e| open_error(wanted, e))?;
        let name = tun.tun_name().map_err(|e| Error::Vpn {
            action: format!("read back the name of the tun device `{wanted}`"),
            source: tun_io(e),
        })?;
        let index = match link_by_name(&nl, &name).await {
            Ok(Some(link)) => link.header.index,
            Ok(None) => {
                return Err(Error::Vpn {
                    action: format!("find the new tun device `{name}`"),
                    source: io::Error::new(io::ErrorKind::NotFound, "it vanished"),
                });
            }
            Err(e) => return Err(os_error(format!("find the new tun device `{name}`"), e)),
        };

        let step = |what: String| move |e: rtnetlink::Error| os_error(what, netlink_io(e));
        nl.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .mtu(u32::from(opts.mtu))
                    .build(),
            )
            .execute()
            .await
            .map_err(step(format!("set the MTU of `{name}` to {}", opts.mtu)))?;
        nl.handle
            .address()
            .add(index, IpAddr::V4(opts.address), 32)
            .execute()
            .await
            .map_err(step(format!(
                "give `{name}` the address {}/32",
                opts.address
            )))?;
        nl.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(step(format!("bring `{name}` up")))?;
        for net in routes {
            let route = RouteMessageBuilder::<IpAddr>::new()
                .destination_prefix(net.network(), net.prefix_len())
                .map_err(|e| Error::Vpn {
                    action: format!("route {net} through `{name}`"),
                    source: io::Error::new(io::ErrorKind::InvalidInput, e.to_string()),
                })?
                .output_interface(index)
                .scope(RouteScope::Link)
                .build();
            nl.handle
                .route()
                .add(route)
                .execute()
                .await
                .map_err(step(format!("route {net} through `{name}`")))?;
        }
        tracing::debug!(target: "kt", "tun device {name} (index {index}) up with {} route(s)", routes.len());
        Ok(Device {
            name,
            index,
            address: opts.address,
            mtu: opts.mtu,
            tun,
        })
    }

    fn tun_io(e: tun::Error) -> io::Error {
        match e {
            tun::Error::Io(e) => e,
            other => io::Error::other(other.to_string()),
        }
    }

    /// Why opening `/dev/net/tun` or creating the device failed, in our words.
    fn open_error(name: &str, e: tun::Error) -> Error {
        let e = tun_io(e);
        match e.raw_os_error().map(Errno::from_raw) {
            // A tun device of that name exists and is attached to a process.
            Some(Errno::EBUSY) => name_in_use(name),
            // No tun driver.
            Some(Errno::ENOENT | Errno::ENODEV) => Error::Vpn {
                action: creating(name),
                source: io::Error::new(
                    e.kind(),
                    format!(
                        "{e}: the tun driver is missing; load it (`modprobe tun`) or, in a \
                         container, pass /dev/net/tun through"
                    ),
                ),
            },
            _ => os_error(creating(name), e),
        }
    }

    pub(super) async fn local_networks() -> Result<Vec<KeepOut>> {
        const ACTION: &str = "read the machine's addresses and routes (kept out of the VPN)";
        let nl = Netlink::open(ACTION)?;
        let fail = |e: rtnetlink::Error| os_error(ACTION.to_owned(), netlink_io(e));
        let mut names = HashMap::new();
        let mut links = nl.handle.link().get().execute();
        while let Some(link) = links.try_next().await.map_err(fail)? {
            if let Some(name) = link_name(&link) {
                names.insert(link.header.index, name.to_owned());
            }
        }
        let dev = |index: u32| {
            names
                .get(&index)
                .cloned()
                .unwrap_or_else(|| format!("interface {index}"))
        };
        let mut out = Vec::new();
        let mut addresses = nl.handle.address().get().execute();
        while let Some(msg) = addresses.try_next().await.map_err(fail)? {
            out.extend(subnet(&msg, &dev));
        }
        let dumps = [
            RouteMessageBuilder::<Ipv4Addr>::new().build(),
            RouteMessageBuilder::<Ipv6Addr>::new().build(),
        ];
        for query in dumps {
            let mut routes = nl.handle.route().get(query).execute();
            while let Some(route) = routes.try_next().await.map_err(fail)? {
                out.extend(gateways(&route, &dev));
            }
        }
        Ok(out)
    }

    /// The subnet of an interface address, unless the address is host-scoped (the
    /// loopback's): the local routing table, which the kernel consults first, always
    /// keeps those on the machine, so no route could take them away.
    pub(super) fn subnet(msg: &AddressMessage, dev: &impl Fn(u32) -> String) -> Option<KeepOut> {
        if msg.header.scope == AddressScope::Host {
            return None;
        }
        // IFA_ADDRESS carries the prefix (on point-to-point links it is the peer's
        // address, whose prefix is the link's subnet).
        msg.attributes.iter().find_map(|attr| match attr {
            AddressAttribute::Address(ip) => {
                IpNet::new(*ip, msg.header.prefix_len).ok().map(|net| {
                    KeepOut::new(
                        net,
                        format!("the local subnet of {}", dev(msg.header.index)),
                    )
                })
            }
            _ => None,
        })
    }

    /// The gateways of a route (its own and its multipath next hops').
    pub(super) fn gateways(route: &RouteMessage, dev: &impl Fn(u32) -> String) -> Vec<KeepOut> {
        let to = if route.header.destination_prefix_length == 0 {
            "the default route".to_owned()
        } else {
            route
                .attributes
                .iter()
                .find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(ip.to_string()),
                    RouteAttribute::Destination(RouteAddress::Inet6(ip)) => Some(ip.to_string()),
                    _ => None,
                })
                .map(|net| {
                    format!(
                        "the route to {net}/{}",
                        route.header.destination_prefix_length
                    )
                })
                .unwrap_or_else(|| "a route".to_owned())
        };
        let oif = route.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        });
        let mut hops: Vec<(&[RouteAttribute], Option<u32>)> = vec![(&route.attributes, oif)];
        for attr in &route.attributes {
            if let RouteAttribute::MultiPath(next) = attr {
                hops.extend(
                    next.iter()
                        .map(|h| (h.attributes.as_slice(), Some(h.interface_index))),
                );
            }
        }
        let mut out = Vec::new();
        for (attrs, oif) in hops {
            for attr in attrs {
                let ip = match attr {
                    RouteAttribute::Gateway(RouteAddress::Inet(ip)) => IpAddr::V4(*ip),
                    RouteAttribute::Gateway(RouteAddress::Inet6(ip)) => IpAddr::V6(*ip),
                    _ => continue,
                };
                let on = oif.map(|i| format!(" on {}", dev(i))).unwrap_or_default();
                out.push(KeepOut::address(ip, format!("the gateway of {to}{on}")));
            }
        }
        out
    }

    pub(super) async fn remove(name: &str, index: u32) -> Result<()> {
        let action = format!("delete the tun device `{name}`");
        let nl = Netlink::open(&action)?;
        match link_by_index(&nl, index).await {
            // Gone with its descriptor, as expected.
            Ok(None) => return Ok(()),
            // The index was reused by another device: not ours.
            Ok(Some(link)) if link_name(&link) != Some(name) => return Ok(()),
            Ok(Some(_)) => {}
            Err(e) => return Err(os_error(action, e)),
        }
        // Still there: another process holds a copy of the descriptor.
        tracing::debug!(target: "kt", "tun device {name} outlived its descriptor; deleting it");
        match nl.handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_enodev(&e) => Ok(()),
            Err(e) => Err(os_error(action, netlink_io(e))),
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::net::IpAddr;

    use rtnetlink::packet_route::AddressFamily;
    use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
    use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};

    use super::linux::{gateways, subnet};
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn dev(index: u32) -> String {
        ["lo", "eth0", "wlan0"]
            .get(index as usize - 1)
            .map_or_else(|| format!("interface {index}"), |n| (*n).to_owned())
    }

    fn address(index: u32, addr: &str, len: u8, scope: AddressScope) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.family = if addr.contains(':') {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        msg.header.index = index;
        msg.header.prefix_len = len;
        msg.header.scope = scope;
        msg.attributes.push(AddressAttribute::Address(ip(addr)));
        msg
    }

    #[test]
    fn every_link_address_gives_its_subnet_but_the_loopback_none() {
        let eth0 = subnet(
            &address(2, "192.168.1.10", 24, AddressScope::Universe),
            &dev,
        );
        assert_eq!(
            eth0,
            Some(KeepOut::new(
                net("192.168.1.0/24"),
                "the local subnet of eth0"
            ))
        );
        let v6 = subnet(
            &address(3, "fd00:1:2:3::9", 64, AddressScope::Universe),
            &dev,
        );
        assert_eq!(v6.map(|k| k.net), Some(net("fd00:1:2:3::/64")));
        assert_eq!(
            subnet(&address(1, "127.0.0.1", 8, AddressScope::Host), &dev),
            None
        );
        assert_eq!(
            subnet(&address(1, "::1", 128, AddressScope::Host), &dev),
            None
        );
    }

    #[test]
    fn route_gateways_are_kept_out_with_their_route() {
        let mut default = RouteMessage::default();
        default.header.address_family = AddressFamily::Inet;
        default.attributes = vec![
            RouteAttribute::Gateway(RouteAddress::Inet(
                "192.168.1.1".parse().unwrap_or_else(|e| panic!("{e}")),
            )),
            RouteAttribute::Oif(3),
        ];
        assert_eq!(
            gateways(&default, &dev),
            vec![KeepOut::address(
                ip("192.168.1.1"),
                "the gateway of the default route on wlan0"
            )]
        );
        let mut to_net = RouteMessage::default();
        to_net.header.address_family = AddressFamily::Inet6;
        to_net.header.destination_prefix_length = 48;
        to_net.attributes = vec![
            RouteAttribute::Destination(RouteAddress::Inet6(
                "2001:db8::".parse().unwrap_or_else(|e| panic!("{e}")),
            )),
            RouteAttribute::Gateway(RouteAddress::Inet6(
                "fe80::1".parse().unwrap_or_else(|e| panic!("{e}")),
            )),
            RouteAttribute::Oif(2),
        ];
        assert_eq!(
            gateways(&to_net, &dev),
            vec![KeepOut::address(
                ip("fe80::1"),
                "the gateway of the route to 2001:db8::/48 on eth0"
            )]
        );
        // A link route has no gateway.
        let mut link = RouteMessage::default();
        link.attributes = vec![RouteAttribute::Oif(2)];
        assert!(gateways(&link, &dev).is_empty());
    }

    #[tokio::test]
    async fn this_namespace_can_be_read() {
        // Read-only netlink dumps: no privilege needed.
        if let Err(e) = local_networks().await {
            panic!("reading addresses and routes: {e}");
        }
    }
}
