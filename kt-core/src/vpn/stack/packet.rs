//! The packets the stack reads and writes itself: classifying what the tun device
//! hands over, building UDP datagrams (fragmented to the MTU) and ICMP "communication
//! administratively prohibited" errors. TCP segments are smoltcp's business.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};

use smoltcp::wire::{
    Icmpv4Message, Icmpv4Packet, Icmpv6Message, Icmpv6Packet, IpProtocol, Ipv4Packet, Ipv6Packet,
    TcpPacket, UdpPacket,
};

/// IPv4 header length without options.
const IPV4_HEADER: usize = 20;
/// IPv6 fixed header length.
const IPV6_HEADER: usize = 40;
/// IPv6 fragment extension header length.
const IPV6_FRAGMENT_HEADER: usize = 8;
/// UDP header length.
const UDP_HEADER: usize = 8;
/// The hop limit of packets the stack makes.
const HOP_LIMIT: u8 = 64;
/// The IPv6 minimum MTU; an ICMPv6 error must fit in it (RFC 4443 §2.4 (c)).
const IPV6_MIN_MTU: usize = 1280;
/// IPv6 next-header value of the fragment extension header.
const IPV6_NEXT_FRAGMENT: u8 = 44;

/// What one packet from the tun device is.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Packet<'a> {
    /// A TCP segment; `opening` when it is a SYN without ACK (a new connection).
    Tcp {
        src: SocketAddr,
        dst: SocketAddr,
        opening: bool,
    },
    /// A whole (unfragmented) UDP datagram.
    Udp {
        src: SocketAddr,
        dst: SocketAddr,
        payload: &'a [u8],
    },
    /// An ICMP or ICMPv6 echo request (ping).
    EchoRequest,
    /// Anything else: other protocols, other ICMP messages, IP fragments of non-TCP
    /// datagrams, IPv6 packets with extension headers. Named for the debug log.
    Other(&'static str),
    /// Not a well-formed IP packet.
    Malformed,
}

/// Classifies one IP packet.
pub(super) fn parse(packet: &[u8]) -> Packet<'_> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => parse_v4(packet),
        Some(6) => parse_v6(packet),
        _ => Packet::Malformed,
    }
}

fn parse_v4(packet: &[u8]) -> Packet<'_> {
    let Ok(ip) = Ipv4Packet::new_checked(packet) else {
        return Packet::Malformed;
    };
    let src = IpAddr::V4(ip.src_addr());
    let dst = IpAddr::V4(ip.dst_addr());
    let fragment = ip.more_frags() || ip.frag_offset() != 0;
    let protocol = ip.next_header();
    if fragment && protocol != IpProtocol::Tcp {
        return Packet::Other("IPv4 fragment");
    }
    transport(protocol, src, dst, ip.payload())
}

fn parse_v6(packet: &[u8]) -> Packet<'_> {
    let Ok(ip) = Ipv6Packet::new_checked(packet) else {
        return Packet::Malformed;
    };
    let src = IpAddr::V6(ip.src_addr());
    let dst = IpAddr::V6(ip.dst_addr());
    transport(ip.next_header(), src, dst, ip.payload())
}

fn transport<'a>(protocol: IpProtocol, src: IpAddr, dst: IpAddr, payload: &'a [u8]) -> Packet<'a> {
    match protocol {
        IpProtocol::Tcp => match TcpPacket::new_checked(payload) {
            Ok(tcp) => Packet::Tcp {
                src: SocketAddr::new(src, tcp.src_port()),
                dst: SocketAddr::new(dst, tcp.dst_port()),
                opening: tcp.syn() && !tcp.ack(),
            },
            Err(_) => Packet::Malformed,
        },
        IpProtocol::Udp => match UdpPacket::new_checked(payload) {
            Ok(udp) => Packet::Udp {
                src: SocketAddr::new(src, udp.src_port()),
                dst: SocketAddr::new(dst, udp.dst_port()),
                payload: udp.payload(),
            },
            Err(_) => Packet::Malformed,
        },
        IpProtocol::Icmp => match Icmpv4Packet::new_checked(payload) {
            Ok(icmp) if icmp.msg_type() == Icmpv4Message::EchoRequest => Packet::EchoRequest,
            Ok(_) => Packet::Other("ICMP message other than echo request"),
            Err(_) => Packet::Malformed,
        },
        IpProtocol::Icmpv6 => match Icmpv6Packet::new_checked(payload) {
            Ok(icmp) if icmp.msg_type() == Icmpv6Message::EchoRequest => Packet::EchoRequest,
            Ok(_) => Packet::Other("ICMPv6 message other than echo request"),
            Err(_) => Packet::Malformed,
        },
        IpProtocol::Ipv6Frag => Packet::Other("IPv6 fragment"),
        IpProtocol::HopByHop | IpProtocol::Ipv6Route | IpProtocol::Ipv6Opts => {
            Packet::Other("IPv6 packet with extension headers")
        }
        _ => Packet::Other("protocol other than TCP, UDP and ICMP"),
    }
}

/// The Internet checksum's running sum over `data` (RFC 1071).
fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        acc += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u32::from(*last) << 8;
    }
    acc
}

/// Folds a running sum into the checksum field's value.
fn finish(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // Lossless: the loop leaves at most 16 bits.
    !u16::try_from(acc).unwrap_or(u16::MAX)
}

/// The sum of an upper-layer pseudo-header (RFC 768 for IPv4, RFC 8200 §8.1 for IPv6).
fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, len: usize) -> u32 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let acc = sum(sum(0, &s.octets()), &d.octets());
            acc + u32::from(protocol) + len as u32
        }
        _ => {
            let acc = sum(sum(0, &v6(src).octets()), &v6(dst).octets());
            let len = len as u32;
            acc + (len >> 16) + (len & 0xffff) + u32::from(protocol)
        }
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V6(a) => a,
        IpAddr::V4(a) => a.to_ipv6_mapped(),
    }
}

/// Identification values for the IPv4 and IPv6 packets the stack makes (fragments of one
/// datagram share one).
static NEXT_ID: AtomicU32 = AtomicU32::new(1);

fn next_id() -> u32 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// An IPv4 header without options, checksum filled in.
fn ipv4_header(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    payload_len: usize,
    id: u16,
    flags_and_offset: u16,
) -> [u8; IPV4_HEADER] {
    let total = u16::try_from(IPV4_HEADER + payload_len).unwrap_or(u16::MAX);
    let mut h = [0u8; IPV4_HEADER];
    h[0] = 0x45;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[6..8].copy_from_slice(&flags_and_offset.to_be_bytes());
    h[8] = HOP_LIMIT;
    h[9] = protocol;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let checksum = finish(sum(0, &h));
    h[10..12].copy_from_slice(&checksum.to_be_bytes());
    h
}

/// An IPv6 fixed header.
fn ipv6_header(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: u8,
    payload_len: usize,
) -> [u8; IPV6_HEADER] {
    let len = u16::try_from(payload_len).unwrap_or(u16::MAX);
    let mut h = [0u8; IPV6_HEADER];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&len.to_be_bytes());
    h[6] = next_header;
    h[7] = HOP_LIMIT;
    h[8..24].copy_from_slice(&src.octets());
    h[24..40].copy_from_slice(&dst.octets());
    h
}

/// The IP packets that carry one UDP datagram from `src` to `dst`: one packet when it
/// fits in `mtu`, else IP fragments of at most `mtu` bytes each. Empty when the
/// datagram is too long for UDP over IP, or the address families differ.
pub(super) fn udp(src: SocketAddr, dst: SocketAddr, payload: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let udp_len = UDP_HEADER + payload.len();
    let Ok(udp_len16) = u16::try_from(udp_len) else {
        return Vec::new();
    };
    let mut datagram = Vec::with_capacity(udp_len);
    datagram.extend_from_slice(&src.port().to_be_bytes());
    datagram.extend_from_slice(&dst.port().to_be_bytes());
    datagram.extend_from_slice(&udp_len16.to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend_from_slice(payload);
    let acc = pseudo_header(src.ip(), dst.ip(), IpProtocol::Udp.into(), udp_len);
    let checksum = match finish(sum(acc, &datagram)) {
        // A computed zero is sent as all ones (zero means "no checksum").
        0 => 0xffff,
        c => c,
    };
    datagram[6..8].copy_from_slice(&checksum.to_be_bytes());

    match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            if IPV4_HEADER + udp_len > usize::from(u16::MAX) {
                return Vec::new();
            }
            // Truncation intended: IPv4 identifications are 16 bits.
            let id = next_id() as u16;
            fragments_v4(s, d, IpProtocol::Udp.into(), &datagram, mtu, id)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            fragments_v6(s, d, IpProtocol::Udp.into(), &datagram, mtu, next_id())
        }
        _ => Vec::new(),
    }
}

/// `payload` (an upper-layer datagram) as IPv4 packets of at most `mtu` bytes.
fn fragments_v4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    payload: &[u8],
    mtu: usize,
    id: u16,
) -> Vec<Vec<u8>> {
    if IPV4_HEADER + payload.len() <= mtu {
        let mut p = Vec::with_capacity(IPV4_HEADER + payload.len());
        p.extend_from_slice(&ipv4_header(src, dst, protocol, payload.len(), id, 0));
        p.extend_from_slice(payload);
        return vec![p];
    }
    // Every fragment but the last carries a multiple of 8 bytes.
    let per = (mtu.saturating_sub(IPV4_HEADER)) & !7;
    if per == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(payload.len().div_ceil(per));
    for (i, chunk) in payload.chunks(per).enumerate() {
        let offset = i * per / 8;
        let more = (i + 1) * per < payload.len();
        let flags = (if more { 0x2000 } else { 0 }) | (offset as u16 & 0x1fff);
        let mut p = Vec::with_capacity(IPV4_HEADER + chunk.len());
        p.extend_from_slice(&ipv4_header(src, dst, protocol, chunk.len(), id, flags));
        p.extend_from_slice(chunk);
        out.push(p);
    }
    out
}

/// `payload` (an upper-layer datagram) as IPv6 packets of at most `mtu` bytes, with
/// fragment headers when it does not fit in one.
fn fragments_v6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: u8,
    payload: &[u8],
    mtu: usize,
    id: u32,
) -> Vec<Vec<u8>> {
    if IPV6_HEADER + payload.len() <= mtu {
        let mut p = Vec::with_capacity(IPV6_HEADER + payload.len());
        p.extend_from_slice(&ipv6_header(src, dst, next_header, payload.len()));
        p.extend_from_slice(payload);
        return vec![p];
    }
    let per = (mtu.saturating_sub(IPV6_HEADER + IPV6_FRAGMENT_HEADER)) & !7;
    if per == 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(payload.len().div_ceil(per));
    for (i, chunk) in payload.chunks(per).enumerate() {
        let offset = (i * per) as u16;
        let more = (i + 1) * per < payload.len();
        let mut p = Vec::with_capacity(IPV6_HEADER + IPV6_FRAGMENT_HEADER + chunk.len());
        p.extend_from_slice(&ipv6_header(
            src,
            dst,
            IPV6_NEXT_FRAGMENT,
            IPV6_FRAGMENT_HEADER + chunk.len(),
        ));
        p.push(next_header);
        p.push(0);
        // The offset in 8-byte units sits in the top 13 bits; the low bit says "more".
        p.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(chunk);
        out.push(p);
    }
    out
}

/// The ICMP error "communication administratively prohibited" answering `original`
/// (an IPv4 or IPv6 packet from the tun device): ICMP type 3 code 13 quoting the
/// original IP header and the first 8 bytes after it, or ICMPv6 type 1 code 1 quoting as
/// much of the original as fits in 1280 bytes. Sent from the original destination to
/// its source. `None` for packets that must not be answered (malformed, or from an
/// address that is not unicast).
pub(super) fn prohibited(original: &[u8], mtu: usize) -> Option<Vec<u8>> {
    match original.first().map(|b| b >> 4) {
        Some(4) => prohibited_v4(original),
        Some(6) => prohibited_v6(original, mtu),
        _ => None,
    }
}

fn prohibited_v4(original: &[u8]) -> Option<Vec<u8>> {
    let ip = Ipv4Packet::new_checked(original).ok()?;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if src.is_unspecified() || src.is_broadcast() || src.is_multicast() || dst.is_multicast() {
        return None;
    }
    // Never answer an ICMP error with an ICMP error (RFC 1122 3.2.2).
    if ip.next_header() == IpProtocol::Icmp
        && Icmpv4Packet::new_checked(ip.payload())
            .is_ok_and(|m| !matches!(m.msg_type(), Icmpv4Message::EchoRequest))
    {
        return None;
    }
    let header_len = usize::from(ip.header_len());
    let quoted_len = (header_len + 8).min(usize::from(ip.total_len()));
    let quoted = &original[..quoted_len];
    let mut icmp = Vec::with_capacity(8 + quoted.len());
    icmp.extend_from_slice(&[3, 13, 0, 0, 0, 0, 0, 0]);
    icmp.extend_from_slice(quoted);
    let checksum = finish(sum(0, &icmp));
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());
    // Truncation intended: IPv4 identifications are 16 bits.
    let header = ipv4_header(
        dst,
        src,
        IpProtocol::Icmp.into(),
        icmp.len(),
        next_id() as u16,
        0,
    );
    let mut p = Vec::with_capacity(IPV4_HEADER + icmp.len());
    p.extend_from_slice(&header);
    p.extend_from_slice(&icmp);
    Some(p)
}

fn prohibited_v6(original: &[u8], mtu: usize) -> Option<Vec<u8>> {
    let ip = Ipv6Packet::new_checked(original).ok()?;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    if src.is_unspecified() || src.is_multicast() || dst.is_multicast() {
        return None;
    }
    if ip.next_header() == IpProtocol::Icmpv6
        && Icmpv6Packet::new_checked(ip.payload())
            .is_ok_and(|m| !matches!(m.msg_type(), Icmpv6Message::EchoRequest))
    {
        return None;
    }
    let room = mtu.min(IPV6_MIN_MTU) - IPV6_HEADER - 8;
    let quoted = &original[..ip.total_len().min(original.len()).min(room)];
    let mut icmp = Vec::with_capacity(8 + quoted.len());
    icmp.extend_from_slice(&[1, 1, 0, 0, 0, 0, 0, 0]);
    icmp.extend_from_slice(quoted);
    let acc = pseudo_header(
        IpAddr::V6(dst),
        IpAddr::V6(src),
        IpProtocol::Icmpv6.into(),
        icmp.len(),
    );
    let checksum = finish(sum(acc, &icmp));
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());
    let mut p = Vec::with_capacity(IPV6_HEADER + icmp.len());
    p.extend_from_slice(&ipv6_header(
        dst,
        src,
        IpProtocol::Icmpv6.into(),
        icmp.len(),
    ));
    p.extend_from_slice(&icmp);
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn echo_request_v4() -> Vec<u8> {
        let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
        icmp.extend_from_slice(b"abcdefghijklmnop");
        let c = finish(sum(0, &icmp));
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let src = Ipv4Addr::new(198, 18, 0, 1);
        let dst = Ipv4Addr::new(10, 200, 0, 9);
        let mut p = ipv4_header(src, dst, 1, icmp.len(), 77, 0x4000).to_vec();
        p.extend_from_slice(&icmp);
        p
    }

    #[test]
    fn an_echo_request_is_recognised() {
        assert_eq!(parse(&echo_request_v4()), Packet::EchoRequest);
    }

    #[test]
    fn the_prohibited_error_quotes_the_request_and_checks_out() {
        let request = echo_request_v4();
        let reply = prohibited(&request, 1500).expect("an answer");
        let ip = Ipv4Packet::new_checked(&reply[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.src_addr(), Ipv4Addr::new(10, 200, 0, 9));
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(198, 18, 0, 1));
        let icmp = ip.payload();
        assert_eq!(&icmp[..2], &[3, 13]);
        assert_eq!(finish(sum(0, icmp)), 0, "ICMP checksum");
        // The original header and the 8 bytes after it (the echo id and sequence).
        assert_eq!(&icmp[8..], &request[..28]);
        // And an ICMP error is never answered.
        assert_eq!(prohibited(&reply, 1500), None);
    }

    #[test]
    fn the_icmpv6_prohibited_error_checks_out() {
        let src: Ipv6Addr = "fd00:198::1".parse().unwrap();
        let dst: Ipv6Addr = "fd00:200::9".parse().unwrap();
        let mut icmp = vec![128, 0, 0, 0, 0x12, 0x34, 0, 1, 1, 2, 3];
        let acc = pseudo_header(IpAddr::V6(src), IpAddr::V6(dst), 58, icmp.len());
        let c = finish(sum(acc, &icmp));
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut request = ipv6_header(src, dst, 58, icmp.len()).to_vec();
        request.extend_from_slice(&icmp);
        assert_eq!(parse(&request), Packet::EchoRequest);

        let reply = prohibited(&request, 1500).expect("an answer");
        let ip = Ipv6Packet::new_checked(&reply[..]).unwrap();
        assert_eq!(ip.src_addr(), dst);
        assert_eq!(ip.dst_addr(), src);
        let body = ip.payload();
        assert_eq!(&body[..2], &[1, 1]);
        let acc = pseudo_header(IpAddr::V6(dst), IpAddr::V6(src), 58, body.len());
        assert_eq!(finish(sum(acc, body)), 0, "ICMPv6 checksum");
        assert_eq!(&body[8..], &request[..]);
    }

    #[test]
    fn a_long_udp_datagram_is_fragmented_within_the_mtu_and_reassembles() {
        let src: SocketAddr = "10.200.0.9:53".parse().unwrap();
        let dst: SocketAddr = "198.18.0.1:40000".parse().unwrap();
        let payload: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let packets = udp(src, dst, &payload, 1280);
        assert!(packets.len() > 1);
        let mut whole = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            assert!(p.len() <= 1280);
            let ip = Ipv4Packet::new_checked(&p[..]).unwrap();
            assert!(ip.verify_checksum());
            assert_eq!(usize::from(ip.frag_offset()), whole.len());
            assert_eq!(ip.more_frags(), i + 1 < packets.len());
            whole.extend_from_slice(ip.payload());
        }
        let acc = pseudo_header(src.ip(), dst.ip(), 17, whole.len());
        assert_eq!(finish(sum(acc, &whole)), 0, "UDP checksum");
        assert_eq!(&whole[8..], &payload[..]);
    }

    #[test]
    fn a_short_udp_datagram_parses_back() {
        let src: SocketAddr = "[fd00:200::9]:53".parse().unwrap();
        let dst: SocketAddr = "[fd00:198::1]:40000".parse().unwrap();
        let packets = udp(src, dst, b"hello", 1500);
        assert_eq!(packets.len(), 1);
        assert_eq!(
            parse(&packets[0]),
            Packet::Udp {
                src,
                dst,
                payload: b"hello"
            }
        );
    }
}
