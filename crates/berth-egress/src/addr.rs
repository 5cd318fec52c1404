//! Which addresses an egress connection may reach without a rule naming them.
//!
//! A name allowed by a broad rule (`*`, `*.suffix`) can resolve anywhere, and the agent may
//! control its DNS. So after resolution every special-purpose address is refused unless a
//! rule names that IP or a CIDR block containing it: loopback, unspecified, "this network"
//! (0/8), RFC 1918 private ranges, CGNAT (100.64/10), link-local (169.254/16, fe80::/10,
//! where cloud metadata services live), IETF protocol assignments (192.0.0/24), the
//! documentation and benchmarking ranges, 6to4 relay anycast, multicast, reserved (240/4) and
//! broadcast, IPv6 ULA (fc00::/7), site-local, discard, Teredo, ORCHID, local-use NAT64, and
//! every address of the host's own interfaces. IPv6 forms that embed an IPv4 address
//! (IPv4-mapped `::ffff:a.b.c.d`, the NAT64 well-known prefix `64:ff9b::/96`, 6to4
//! `2002::/16`) are judged by the embedded address; the deprecated IPv4-compatible form
//! (`::a.b.c.d`) is refused outright.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why an address is special, or `None` for an ordinary public address. Does not know the
/// host's own addresses (see [`LocalAddrs`]).
pub fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const TABLE: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "this-network address (0/8)"),
        ([10, 0, 0, 0], 8, "private address (RFC 1918)"),
        ([100, 64, 0, 0], 10, "shared CGNAT address (100.64/10)"),
        ([127, 0, 0, 0], 8, "loopback address"),
        ([169, 254, 0, 0], 16, "link-local address"),
        ([172, 16, 0, 0], 12, "private address (RFC 1918)"),
        ([192, 0, 0, 0], 24, "IETF protocol assignment (192.0.0/24)"),
        ([192, 0, 2, 0], 24, "documentation address"),
        ([192, 88, 99, 0], 24, "6to4 relay anycast address"),
        ([192, 168, 0, 0], 16, "private address (RFC 1918)"),
        ([198, 18, 0, 0], 15, "benchmarking address"),
        ([198, 51, 100, 0], 24, "documentation address"),
        ([203, 0, 113, 0], 24, "documentation address"),
        ([224, 0, 0, 0], 4, "multicast address"),
        ([240, 0, 0, 0], 4, "reserved or broadcast address"),
    ];
    TABLE
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, why)| *why)
}

fn in_v6(ip: Ipv6Addr, net: u128, prefix: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
    u128::from(ip) & mask == net & mask
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let bits = u128::from(ip);
    if ip.is_unspecified() {
        return Some("unspecified address");
    }
    if ip.is_loopback() {
        return Some("loopback address");
    }
    // Forms that carry an IPv4 address are judged by it.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4);
    }
    if in_v6(ip, 0, 96) {
        return Some("IPv4-compatible address (deprecated)");
    }
    if in_v6(ip, 0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96) {
        return special_v4(Ipv4Addr::from(bits as u32));
    }
    if in_v6(ip, 0x2002 << 112, 16) {
        return special_v4(Ipv4Addr::from((bits >> 80) as u32));
    }
    const TABLE: &[(u128, u32, &str)] = &[
        (0x0064_ff9b_0001 << 80, 48, "local-use NAT64 address"),
        (0x0100 << 112, 64, "discard address"),
        (0x2001 << 112, 32, "Teredo address"),
        (0x2001_0002 << 96, 48, "benchmarking address"),
        (0x2001_0010 << 96, 28, "ORCHID address"),
        (0x2001_0020 << 96, 28, "ORCHID address"),
        (0x2001_0db8 << 96, 32, "documentation address"),
        (0x3fff << 112, 20, "documentation address"),
        (0xfc00 << 112, 7, "unique local address (ULA)"),
        (0xfe80 << 112, 10, "link-local address"),
        (0xfec0 << 112, 10, "site-local address (deprecated)"),
        (0xff00 << 112, 8, "multicast address"),
    ];
    TABLE
        .iter()
        .find(|(net, prefix, _)| in_v6(ip, *net, *prefix))
        .map(|(_, _, why)| *why)
}

/// The addresses of the host's own interfaces (IPv4-mapped forms included), re-read at most
/// every few seconds.
#[derive(Default)]
pub struct LocalAddrs {
    cache: Mutex<Option<(Instant, HashSet<IpAddr>)>>,
}

const LOCAL_ADDRS_TTL: Duration = Duration::from_secs(5);

impl LocalAddrs {
    pub fn new() -> Self {
        Self {
            cache: Mutex::new(None),
        }
    }

    /// Whether `ip` is one of the host's own addresses. When the interfaces cannot be read,
    /// the last known set is used (empty before the first success).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let mut cache = berth_domain::sync::lock(&self.cache);
        let fresh = cache
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < LOCAL_ADDRS_TTL);
        if !fresh {
            match read_local_addrs() {
                Ok(set) => *cache = Some((Instant::now(), set)),
                Err(e) => tracing::warn!(error = %e, "cannot list the host's addresses"),
            }
        }
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        cache.as_ref().is_some_and(|(_, set)| set.contains(&ip))
    }
}

fn read_local_addrs() -> nix::Result<HashSet<IpAddr>> {
    let mut out = HashSet::new();
    for ifa in nix::ifaddrs::getifaddrs()? {
        let Some(addr) = ifa.address else { continue };
        if let Some(v4) = addr.as_sockaddr_in() {
            out.insert(IpAddr::V4(v4.ip()));
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            out.insert(IpAddr::V6(v6.ip()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_purpose_addresses() {
        for a in [
            "0.0.0.0",
            "0.1.2.3",
            "10.0.0.1",
            "10.255.255.255",
            "100.64.0.1",
            "100.127.255.254",
            "127.0.0.1",
            "127.9.9.9",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::10.0.0.1",
            "::8.8.8.8",
            "64:ff9b::10.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b:1::1",
            "2002:0a00:0001::1",
            "2002:a9fe:a9fe::1",
            "100::1",
            "2001::1",
            "2001:2::1",
            "2001:10::1",
            "2001:20::1",
            "2001:db8::1",
            "3fff::1",
            "fc00::1",
            "fd00:ec2::254",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(special_purpose(a.parse().unwrap()).is_some(), "{a}");
        }
        for a in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.255",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:0808:0808::1",
            "2606:4700::1111",
            "2a00:1450:4001::1",
        ] {
            assert_eq!(special_purpose(a.parse().unwrap()), None, "{a}");
        }
    }

    #[test]
    fn the_hosts_own_addresses_are_known() {
        let local = LocalAddrs::new();
        assert!(local.contains("127.0.0.1".parse().unwrap()));
        assert!(local.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!local.contains("192.0.2.77".parse().unwrap()));
        // Every interface address the kernel reports is in the set.
        for a in read_local_addrs().unwrap() {
            assert!(local.contains(a), "{a}");
        }
    }
}
