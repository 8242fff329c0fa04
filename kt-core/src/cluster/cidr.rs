//! Prefix arithmetic on [`IpNet`], for the VPN's routes: merging the cluster's ranges,
//! taking out the ones that must never go into the tunnel, and covering a set of
//! addresses with one prefix.
//!
//! Every function works on IPv4 and IPv6 at once (a family never mixes with the other)
//! and returns the *minimal* set of prefixes for its result: disjoint, with host bits
//! cleared, and no two that could be joined into their parent. Results are sorted,
//! IPv4 first, then by address.
//!
//! Internally a prefix is a closed interval of addresses (as `u128`); unions and
//! differences are computed on merged intervals and each interval is cut back into
//! the largest aligned blocks it holds.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The union of `nets` as the fewest prefixes: overlapping, nested and adjacent
/// prefixes are merged (`10.0.0.0/25` and `10.0.0.128/25` become `10.0.0.0/24`).
pub(crate) fn aggregate(nets: &[IpNet]) -> Vec<IpNet> {
    to_prefixes(&merge(nets.iter().map(Span::of).collect()))
}

/// The addresses of `nets` that are in none of `holes`, as the fewest prefixes
/// (`10.0.0.0/8` minus `10.88.255.1/32` gives 24 prefixes, one per bit below `/8`).
pub(crate) fn subtract(nets: &[IpNet], holes: &[IpNet]) -> Vec<IpNet> {
    let nets = merge(nets.iter().map(Span::of).collect());
    let holes = merge(holes.iter().map(Span::of).collect());
    let mut out = Vec::new();
    for net in nets {
        let mut first = net.first;
        let mut rest = true;
        // `holes` is sorted and disjoint: the ones overlapping `net` come in order.
        for hole in holes
            .iter()
            .filter(|h| h.family == net.family && h.last >= net.first && h.first <= net.last)
        {
            if hole.first > first {
                out.push(Span {
                    family: net.family,
                    first,
                    last: hole.first - 1,
                });
            }
            if hole.last >= net.last {
                rest = false;
                break;
            }
            // hole.last < net.last, so this cannot overflow.
            first = hole.last + 1;
        }
        if rest {
            out.push(Span {
                family: net.family,
                first,
                last: net.last,
            });
        }
    }
    to_prefixes(&out)
}

/// The smallest prefix holding every one of `addrs`, one per address family present
/// (IPv4 first); empty for no addresses. `10.244.0.5` and `10.244.3.7` give
/// `10.244.0.0/22`.
#[allow(
    dead_code,
    reason = "kept for routes over a known set of addresses; discovery widens each address instead"
)]
pub(crate) fn covering(addrs: impl IntoIterator<Item = IpAddr>) -> Vec<IpNet> {
    let mut bounds: [Option<(u128, u128)>; 2] = [None, None];
    for addr in addrs {
        let (family, value) = Family::split(addr);
        let slot = &mut bounds[family as usize];
        *slot = Some(match *slot {
            None => (value, value),
            Some((lo, hi)) => (lo.min(value), hi.max(value)),
        });
    }
    let mut out = Vec::new();
    for (family, bounds) in [Family::V4, Family::V6].into_iter().zip(bounds) {
        if let Some((lo, hi)) = bounds {
            // The prefix keeps the leading bits the lowest and highest address share.
            let host = 128 - (lo ^ hi).leading_zeros();
            out.push(family.net(lo, family.bits() - host));
        }
    }
    out
}

/// An address family; the discriminant indexes per-family arrays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Family {
    V4 = 0,
    V6 = 1,
}

impl Family {
    /// The address and its value.
    fn split(addr: IpAddr) -> (Family, u128) {
        match addr {
            IpAddr::V4(a) => (Family::V4, u128::from(u32::from(a))),
            IpAddr::V6(a) => (Family::V6, u128::from(a)),
        }
    }

    /// Bits in an address.
    fn bits(self) -> u32 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// The prefix of length `len` holding the address `value`, host bits cleared.
    fn net(self, value: u128, len: u32) -> IpNet {
        // Lengths come from `bits()` arithmetic and never exceed it; values of IPv4
        // spans never exceed u32::MAX.
        let len = u8::try_from(len).expect("a prefix length fits in u8");
        match self {
            Family::V4 => {
                let addr = Ipv4Addr::from(u32::try_from(value).expect("an IPv4 value"));
                IpNet::V4(
                    Ipv4Net::new(addr, len)
                        .expect("an IPv4 prefix length")
                        .trunc(),
                )
            }
            Family::V6 => {
                let addr = Ipv6Addr::from(value);
                IpNet::V6(
                    Ipv6Net::new(addr, len)
                        .expect("an IPv6 prefix length")
                        .trunc(),
                )
            }
        }
    }
}

/// A closed interval of addresses of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Span {
    family: Family,
    first: u128,
    last: u128,
}

impl Span {
    fn of(net: &IpNet) -> Span {
        let (family, first) = Family::split(net.network());
        let (_, last) = Family::split(net.broadcast());
        Span {
            family,
            first,
            last,
        }
    }
}

/// Sorts `spans` and joins overlapping and adjacent ones: the result is sorted,
/// disjoint, and no two of the same family touch.
fn merge(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_unstable();
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for span in spans {
        match out.last_mut() {
            // `saturating_add`: a span ending at u128::MAX swallows all that follow.
            Some(cur) if cur.family == span.family && span.first <= cur.last.saturating_add(1) => {
                cur.last = cur.last.max(span.last);
            }
            _ => out.push(span),
        }
    }
    out
}

/// Each span as the largest aligned blocks it holds, in order.
fn to_prefixes(spans: &[Span]) -> Vec<IpNet> {
    let mut out = Vec::new();
    for span in spans {
        let bits = span.family.bits();
        let mut first = span.first;
        loop {
            // The largest block aligned at `first`, shrunk until it ends inside the span.
            let mut host = first.trailing_zeros().min(bits);
            while block_last(first, host) > span.last {
                host -= 1;
            }
            out.push(span.family.net(first, bits - host));
            let last = block_last(first, host);
            if last >= span.last {
                break;
            }
            first = last + 1;
        }
    }
    out
}

/// The last address of the block of `2^host` addresses starting at `first` (aligned
/// to that size, so this cannot overflow).
fn block_last(first: u128, host: u32) -> u128 {
    if host >= 128 {
        u128::MAX
    } else {
        first + ((1u128 << host) - 1)
    }
}

/// Parsers for tests of prefix arithmetic (here and in `ranges`).
#[cfg(test)]
pub(crate) mod testing {
    use std::net::IpAddr;

    use ipnet::IpNet;

    /// Every string parsed as a prefix (panics on a typo in the test).
    pub(crate) fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter()
            .map(|s| s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
            .collect()
    }

    /// An address (panics on a typo in the test).
    pub(crate) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{ip, nets};
    use super::*;

    fn inside(nets: &[IpNet], addr: IpAddr) -> bool {
        nets.iter().any(|n| n.contains(&addr))
    }

    #[test]
    fn aggregate_joins_halves_nested_and_duplicates() {
        assert_eq!(
            aggregate(&nets(&["10.0.0.128/25", "10.0.0.0/25"])),
            nets(&["10.0.0.0/24"])
        );
        assert_eq!(
            aggregate(&nets(&["10.0.3.0/24", "10.0.0.0/16", "10.0.0.0/16"])),
            nets(&["10.0.0.0/16"])
        );
        // Four quarters in any order make the whole.
        assert_eq!(
            aggregate(&nets(&[
                "10.0.0.192/26",
                "10.0.0.0/26",
                "10.0.0.128/26",
                "10.0.0.64/26"
            ])),
            nets(&["10.0.0.0/24"])
        );
    }

    #[test]
    fn aggregate_keeps_adjacent_unaligned_prefixes_apart() {
        // 10.0.1.0-10.0.2.255 is contiguous but no single prefix.
        assert_eq!(
            aggregate(&nets(&["10.0.2.0/24", "10.0.1.0/24"])),
            nets(&["10.0.1.0/24", "10.0.2.0/24"])
        );
        assert_eq!(
            aggregate(&nets(&["10.0.0.0/24", "10.0.2.0/24"])),
            nets(&["10.0.0.0/24", "10.0.2.0/24"])
        );
    }

    #[test]
    fn aggregate_clears_host_bits_and_sorts_v4_before_v6() {
        assert_eq!(
            aggregate(&nets(&["fd00::5/64", "10.1.2.3/16", "10.0.0.0/16"])),
            nets(&["10.0.0.0/15", "fd00::/64"])
        );
    }

    #[test]
    fn aggregate_reaches_the_whole_address_space() {
        assert_eq!(
            aggregate(&nets(&["128.0.0.0/1", "0.0.0.0/1"])),
            nets(&["0.0.0.0/0"])
        );
        assert_eq!(aggregate(&nets(&["8000::/1", "::/1"])), nets(&["::/0"]));
        assert_eq!(
            aggregate(&nets(&["255.255.255.255/32", "255.255.255.254/32"])),
            nets(&["255.255.255.254/31"])
        );
        assert_eq!(aggregate(&[]), Vec::<IpNet>::new());
    }

    #[test]
    fn subtracting_one_address_from_a_slash_8_leaves_24_prefixes() {
        let out = subtract(&nets(&["10.0.0.0/8"]), &nets(&["10.88.255.1/32"]));
        assert_eq!(out.len(), 24, "{out:?}");
        assert!(!inside(&out, ip("10.88.255.1")));
        for addr in ["10.0.0.0", "10.88.255.0", "10.88.255.2", "10.255.255.255"] {
            assert!(inside(&out, ip(addr)), "{addr} lost");
        }
        assert!(out.contains(&"10.128.0.0/9".parse().unwrap_or_else(|_| unreachable!())));
        assert!(out.contains(&"10.88.255.0/32".parse().unwrap_or_else(|_| unreachable!())));
    }

    #[test]
    fn subtract_edge_cases() {
        // Nothing left.
        assert_eq!(
            subtract(&nets(&["10.0.0.0/24"]), &nets(&["10.0.0.0/16"])),
            Vec::<IpNet>::new()
        );
        // Disjoint holes change nothing.
        assert_eq!(
            subtract(&nets(&["10.0.0.0/24"]), &nets(&["10.0.1.0/24", "fd00::/8"])),
            nets(&["10.0.0.0/24"])
        );
        // The ends of the address space.
        assert_eq!(
            subtract(&nets(&["0.0.0.0/0"]), &nets(&["0.0.0.0/32"])).len(),
            32
        );
        assert_eq!(
            subtract(&nets(&["0.0.0.0/0"]), &nets(&["255.255.255.255/32"])).len(),
            32
        );
        assert_eq!(subtract(&nets(&["::/0"]), &nets(&["::1/128"])).len(), 128);
        // A hole at each end of the net.
        assert_eq!(
            subtract(
                &nets(&["10.0.0.0/24"]),
                &nets(&["10.0.0.0/26", "10.0.0.192/26"])
            ),
            nets(&["10.0.0.64/26", "10.0.0.128/26"])
        );
        // Families do not mix: an IPv4 hole leaves IPv6 alone.
        assert_eq!(
            subtract(&nets(&["fd00::/64", "10.0.0.0/24"]), &nets(&["0.0.0.0/0"])),
            nets(&["fd00::/64"])
        );
    }

    #[test]
    fn covering_finds_the_smallest_prefix_per_family() {
        assert_eq!(
            covering([ip("10.244.3.7"), ip("10.244.0.5")]),
            nets(&["10.244.0.0/22"])
        );
        assert_eq!(covering([ip("10.1.2.3")]), nets(&["10.1.2.3/32"]));
        assert_eq!(
            covering([ip("0.0.0.0"), ip("255.255.255.255")]),
            nets(&["0.0.0.0/0"])
        );
        assert_eq!(
            covering([
                ip("fd00::1:2"),
                ip("10.0.0.1"),
                ip("fd00::1:3"),
                ip("10.0.0.2")
            ]),
            nets(&["10.0.0.0/30", "fd00::1:2/127"])
        );
        assert_eq!(covering([]), Vec::<IpNet>::new());
    }

    /// A small, seeded generator (splitmix64): reproducible cases without a dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// The result must be canonical: host bits clear, sorted, pairwise disjoint, and
    /// no two prefixes that are the halves of one parent (then it is the unique
    /// fewest-prefix form of the set it covers).
    fn assert_minimal(out: &[IpNet], case: &str) {
        for n in out {
            assert_eq!(*n, n.trunc(), "{case}: host bits in {n}");
        }
        for pair in out.windows(2) {
            assert!(pair[0] < pair[1], "{case}: not sorted: {out:?}");
        }
        for (i, a) in out.iter().enumerate() {
            for b in &out[i + 1..] {
                assert!(
                    !a.contains(b) && !b.contains(a),
                    "{case}: {a} and {b} overlap"
                );
                if a.prefix_len() == b.prefix_len() && a.prefix_len() > 0 {
                    assert_ne!(
                        a.supernet(),
                        b.supernet(),
                        "{case}: {a} and {b} could be one prefix"
                    );
                }
            }
        }
    }

    /// Random prefixes inside `universe`, each at least `/min_len`.
    fn random_nets(rng: &mut Rng, universe: IpNet, min_len: u8, count: u64) -> Vec<IpNet> {
        let (family, base) = Family::split(universe.network());
        let size_bits = family.bits() - u32::from(universe.prefix_len());
        (0..rng.below(count + 1))
            .map(|_| {
                let offset = u128::from(rng.next()) << 64 | u128::from(rng.next());
                let offset = if size_bits >= 128 {
                    offset
                } else {
                    offset % (1u128 << size_bits)
                };
                let span = u64::from(family.bits() as u8 - min_len) + 1;
                let len = u32::from(min_len) + rng.below(span) as u32;
                family.net(base | offset, len)
            })
            .collect()
    }

    /// Every address of a small universe (and one on each side) is in the result
    /// exactly when it is in `nets` and in no hole; the result is minimal.
    #[test]
    fn random_cases_over_small_universes_checked_address_by_address() {
        let mut rng = Rng(0x006b_742d_6369_6472);
        for (universe, min_len) in [("10.0.0.0/22", 22u8), ("fd00::/118", 118u8)] {
            let universe: IpNet = universe.parse().unwrap_or_else(|_| unreachable!());
            let (family, base) = Family::split(universe.network());
            let (_, top) = Family::split(universe.broadcast());
            for case in 0..400 {
                let a = random_nets(&mut rng, universe, min_len, 6);
                let holes = random_nets(&mut rng, universe, min_len, 6);
                let diff = subtract(&a, &holes);
                let union = aggregate(&a);
                let name = format!("{universe} case {case}: {a:?} minus {holes:?}");
                assert_minimal(&diff, &name);
                assert_minimal(&union, &name);
                for value in base - 1..=top + 1 {
                    let addr = family.net(value, family.bits()).network();
                    let want = inside(&a, addr) && !inside(&holes, addr);
                    assert_eq!(inside(&diff, addr), want, "{name}: {addr} in {diff:?}");
                    assert_eq!(inside(&union, addr), inside(&a, addr), "{name}: {addr}");
                }
            }
        }
    }

    /// Over the whole address space: the addresses at and next to every input
    /// boundary, plus random ones, are in the result exactly when they should be.
    #[test]
    fn random_cases_over_the_whole_space_checked_at_boundaries() {
        let mut rng = Rng(0x0000_726f_7574_6573);
        for universe in ["0.0.0.0/0", "::/0"] {
            let universe: IpNet = universe.parse().unwrap_or_else(|_| unreachable!());
            let (family, _) = Family::split(universe.network());
            let max = if family == Family::V4 {
                u128::from(u32::MAX)
            } else {
                u128::MAX
            };
            for case in 0..1000 {
                let a = random_nets(&mut rng, universe, 0, 5);
                let holes = random_nets(&mut rng, universe, 0, 5);
                let diff = subtract(&a, &holes);
                let name = format!("{universe} case {case}: {a:?} minus {holes:?}");
                assert_minimal(&diff, &name);
                let mut samples: Vec<u128> = vec![0, max];
                for n in a.iter().chain(&holes) {
                    let (_, lo) = Family::split(n.network());
                    let (_, hi) = Family::split(n.broadcast());
                    samples.extend([lo, hi, lo.saturating_sub(1), hi.saturating_add(1).min(max)]);
                }
                for n in &diff {
                    let (_, lo) = Family::split(n.network());
                    let (_, hi) = Family::split(n.broadcast());
                    samples.extend([lo, hi]);
                }
                for _ in 0..64 {
                    let v = u128::from(rng.next()) << 64 | u128::from(rng.next());
                    samples.push(if family == Family::V4 { v & max } else { v });
                }
                for value in samples {
                    let addr = family.net(value, family.bits()).network();
                    let want = inside(&a, addr) && !inside(&holes, addr);
                    assert_eq!(inside(&diff, addr), want, "{name}: {addr} in {diff:?}");
                }
            }
        }
    }

    /// `covering` gives a prefix holding every address, and neither half of it would.
    #[test]
    fn random_covering_is_smallest() {
        let mut rng = Rng(0x0063_6f76_6572);
        for case in 0..2000 {
            let base = rng.next() as u32;
            let spread = 1u32 << rng.below(33).min(31);
            let addrs: Vec<IpAddr> = (0..1 + rng.below(5))
                .map(|_| IpAddr::V4(Ipv4Addr::from(base ^ (rng.next() as u32 % spread))))
                .collect();
            let out = covering(addrs.iter().copied());
            assert_eq!(out.len(), 1, "case {case}");
            let net = out[0];
            assert!(
                addrs.iter().all(|a| net.contains(a)),
                "case {case}: {net} {addrs:?}"
            );
            if let Ok(halves) = net.subnets(net.prefix_len() + 1) {
                for half in halves {
                    assert!(
                        !addrs.iter().all(|a| half.contains(a)),
                        "case {case}: {half} already holds {addrs:?}"
                    );
                }
            }
        }
    }
}
