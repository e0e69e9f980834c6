//! Which addresses a callback may reach (PRODUCT.md §3: "private and loopback addresses are
//! refused unless allowed in config").
//!
//! A callback URL is given by whoever enqueues a job, and the server then makes a request to
//! it from inside its own network: without a guard, anyone allowed to enqueue could make the
//! server post to its own admin ports, a database on the private network or the cloud's
//! metadata service (server-side request forgery). So every address a delivery would connect
//! to is checked here first: loopback, private, link-local, unspecified, shared (CGNAT),
//! multicast, broadcast and reserved ranges are refused, also when written as an IPv6 form
//! that carries an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`,
//! 6to4 `2002::/16`, NAT64 `64:ff9b::/96`), unless a network the operator allowed
//! (`hinter serve --callback-allow-net`) holds the address.
//!
//! The check is pure: the server runs it at enqueue on a literal IP host (and on
//! `localhost`), and the delivery runs it on every address a host name resolves to, at
//! connect time (DNS may answer differently later).

use crate::FieldError;
pub use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The networks callbacks may reach although they lie in a refused range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
}

/// Why an address is refused: the range it lies in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub address: IpAddr,
    /// `loopback`, `private`, `link-local`, … (see [`restricted_range`]).
    pub range: &'static str,
}

impl Refusal {
    /// The range with its article: `a loopback address`, `an unspecified address`.
    pub fn kind(&self) -> String {
        article(self.range)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the address {} is {} and callbacks may not reach it (allow its network with \
             --callback-allow-net)",
            self.address,
            article(self.range)
        )
    }
}

fn article(range: &str) -> String {
    match range.as_bytes().first() {
        Some(b'a' | b'e' | b'i' | b'o' | b'u') => format!("an {range} address"),
        _ => format!("a {range} address"),
    }
}

impl AddressPolicy {
    /// Refuses every restricted range except those in `allowed`.
    pub fn new(allowed: Vec<IpNet>) -> Self {
        Self { allowed }
    }

    /// The networks allowed besides the public ones.
    pub fn allowed(&self) -> &[IpNet] {
        &self.allowed
    }

    /// Whether a callback may connect to `address`: any address outside the restricted
    /// ranges, and any inside a network allowed (an IPv6 form carrying an IPv4 address is
    /// allowed by a network holding either).
    pub fn check(&self, address: IpAddr) -> Result<(), Refusal> {
        let Some(range) = restricted_range(address) else {
            return Ok(());
        };
        let embedded = embedded_ipv4(address).map(IpAddr::V4);
        let allowed = self
            .allowed
            .iter()
            .any(|net| net.contains(&address) || embedded.is_some_and(|v4| net.contains(&v4)));
        if allowed {
            Ok(())
        } else {
            Err(Refusal { address, range })
        }
    }

    /// What can be checked of a `callback_url` before any name is resolved: a literal IP
    /// host must be allowed, and `localhost` (or a name under `.localhost`, which resolvers
    /// answer with loopback) needs loopback allowed. Other host names are checked at
    /// delivery, for every address they resolve to. A URL that does not parse passes here:
    /// [`crate::followup::check_callback_url`] refuses it.
    pub fn check_url(&self, field: &str, value: &str) -> Result<(), FieldError> {
        let Ok(url) = url::Url::parse(value) else {
            return Ok(());
        };
        let refused = |refusal: Refusal| FieldError::new(field, refusal.to_string());
        match url.host() {
            Some(url::Host::Ipv4(ip)) => self.check(IpAddr::V4(ip)).map_err(refused),
            Some(url::Host::Ipv6(ip)) => self.check(IpAddr::V6(ip)).map_err(refused),
            Some(url::Host::Domain(name)) if is_localhost(name) => {
                let v4 = self.check(IpAddr::V4(Ipv4Addr::LOCALHOST));
                let v6 = self.check(IpAddr::V6(Ipv6Addr::LOCALHOST));
                if v4.is_ok() || v6.is_ok() {
                    Ok(())
                } else {
                    Err(FieldError::new(
                        field,
                        format!(
                            "{name:?} is a loopback address and callbacks may not reach it \
                             (allow it with --callback-allow-net 127.0.0.1/32)"
                        ),
                    ))
                }
            }
            _ => Ok(()),
        }
    }
}

/// `localhost` and names under `localhost.` (RFC 6761), which resolve to loopback.
fn is_localhost(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Parses `--callback-allow-net` values: a CIDR (`10.0.0.0/8`, `fd00::/8`) or a single
/// address (`127.0.0.1`, taken as `/32`; `::1` as `/128`).
pub fn parse_allowed_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    Err(format!(
        "{text:?} is not a network: expected an address with a prefix length such as \
         127.0.0.1/32, 10.0.0.0/8 or fd00::/8"
    ))
}

/// The restricted range `address` lies in, if any; `None` for a public address.
pub fn restricted_range(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => restricted_v6(v6),
    }
}

fn restricted_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(if ip.is_unspecified() || a == 0 {
        // 0.0.0.0/8: "this network"; connecting to 0.0.0.0 reaches the host itself.
        "unspecified"
    } else if ip.is_loopback() {
        "loopback"
    } else if ip.is_private() {
        "private"
    } else if ip.is_link_local() {
        // 169.254/16, which holds the cloud metadata service 169.254.169.254.
        "link-local"
    } else if a == 100 && (b & 0xc0) == 64 {
        // 100.64/10, carrier-grade NAT (RFC 6598).
        "shared (carrier-grade NAT)"
    } else if ip.is_broadcast() {
        "broadcast"
    } else if ip.is_multicast() {
        "multicast"
    } else if a >= 240 {
        // 240/4: reserved for future use.
        "reserved"
    } else if a == 192 && b == 0 && ip.octets()[2] == 0 {
        // 192.0.0.0/24: IETF protocol assignments.
        "reserved"
    } else if a == 198 && (b & 0xfe) == 18 {
        // 198.18/15: benchmarking, often routed inside data centres.
        "benchmarking"
    } else {
        return None;
    })
}

fn restricted_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    if let Some(v4) = embedded_ipv4(IpAddr::V6(ip)) {
        return restricted_v4(v4);
    }
    let first = ip.segments()[0];
    Some(if ip.is_multicast() {
        "multicast"
    } else if ip.is_unique_local() {
        // fc00::/7
        "private"
    } else if ip.is_unicast_link_local() {
        // fe80::/10
        "link-local"
    } else if (first & 0xffc0) == 0xfec0 {
        // fec0::/10: site-local, deprecated but still private.
        "private"
    } else if first == 0x0064 && ip.segments()[1] == 0xff9b && ip.segments()[2] == 1 {
        // 64:ff9b:1::/48: NAT64 for local use (RFC 8215).
        "private"
    } else if first == 0x0100 && ip.segments()[1..4] == [0, 0, 0] {
        // 100::/64: discard-only.
        "reserved"
    } else {
        return None;
    })
}

/// The IPv4 address an IPv6 address carries, for the forms that reach it: IPv4-mapped
/// (`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`, deprecated), 6to4 (`2002:AABB:CCDD::/48`)
/// and the well-known NAT64 prefix (`64:ff9b::/96`).
pub fn embedded_ipv4(address: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(ip) = address else {
        return None;
    };
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback() {
        return Some(low);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(low);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(
            (s[1] >> 8) as u8,
            s[1] as u8,
            (s[2] >> 8) as u8,
            s[2] as u8,
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    fn refused(policy: &AddressPolicy, text: &str) -> &'static str {
        match policy.check(ip(text)) {
            Err(refusal) => refusal.range,
            Ok(()) => panic!("{text} was allowed"),
        }
    }

    #[test]
    fn every_restricted_range_is_refused_by_default() {
        let policy = AddressPolicy::default();
        for (address, range) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("::1", "loopback"),
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.1", "private"),
            ("192.168.1.1", "private"),
            ("fc00::1", "private"),
            ("fd12:3456::1", "private"),
            ("fec0::1", "private"),
            ("169.254.169.254", "link-local"),
            ("169.254.0.1", "link-local"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("::", "unspecified"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("100.127.255.255", "shared (carrier-grade NAT)"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("ff02::1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("192.0.0.8", "reserved"),
            ("198.18.0.1", "benchmarking"),
            ("100::1", "reserved"),
            ("64:ff9b:1::a00:1", "private"),
        ] {
            assert_eq!(refused(&policy, address), range, "{address}");
        }
    }

    #[test]
    fn ipv6_forms_of_restricted_ipv4_addresses_are_refused() {
        let policy = AddressPolicy::default();
        for (address, range) in [
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.1.2.3", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::ffff:0.0.0.0", "unspecified"),
            ("::127.0.0.1", "loopback"),
            ("::192.168.0.1", "private"),
            ("2002:7f00:1::", "loopback"),
            ("2002:a9fe:a9fe::1", "link-local"),
            ("2002:c0a8:101::", "private"),
            ("64:ff9b::127.0.0.1", "loopback"),
            ("64:ff9b::10.0.0.1", "private"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
        ] {
            assert_eq!(refused(&policy, address), range, "{address}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        let policy = AddressPolicy::default();
        for address in [
            "93.184.216.34",
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "11.0.0.1",
            "2606:2800:220:1:248:1893:25c8:1946",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
            "64:ff9b::808:808",
        ] {
            assert_eq!(policy.check(ip(address)), Ok(()), "{address}");
        }
    }

    #[test]
    fn allowed_networks_open_exactly_their_addresses() {
        let policy = AddressPolicy::new(vec![
            parse_allowed_net("127.0.0.1/32").unwrap(),
            parse_allowed_net("10.1.0.0/16").unwrap(),
            parse_allowed_net("fd00::/8").unwrap(),
        ]);
        for address in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "10.1.2.3",
            "::ffff:10.1.200.1",
            "fd00::5",
        ] {
            assert_eq!(policy.check(ip(address)), Ok(()), "{address}");
        }
        assert_eq!(refused(&policy, "127.0.0.2"), "loopback");
        assert_eq!(refused(&policy, "::1"), "loopback");
        assert_eq!(refused(&policy, "10.2.0.1"), "private");
        assert_eq!(refused(&policy, "fc00::1"), "private");
        assert_eq!(refused(&policy, "169.254.169.254"), "link-local");
    }

    #[test]
    fn allowed_networks_parse_with_or_without_a_prefix() {
        assert_eq!(
            parse_allowed_net("127.0.0.1").unwrap(),
            "127.0.0.1/32".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_allowed_net(" ::1 ").unwrap(),
            "::1/128".parse::<IpNet>().unwrap()
        );
        assert_eq!(
            parse_allowed_net("10.0.0.0/8").unwrap(),
            "10.0.0.0/8".parse::<IpNet>().unwrap()
        );
        for bad in ["", "localhost", "10.0.0.0/33", "10.0.0/8", "fd00::/129"] {
            assert!(
                parse_allowed_net(bad)
                    .unwrap_err()
                    .contains("not a network"),
                "{bad}"
            );
        }
    }

    #[test]
    fn urls_with_literal_restricted_hosts_or_localhost_are_refused() {
        let policy = AddressPolicy::default();
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://[::1]/hook",
            "https://[::ffff:127.0.0.1]/",
            "http://10.0.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://0.0.0.0:80/",
            "http://localhost:9000/",
            "http://LOCALHOST./",
            "http://api.localhost/",
            // The URL parser reads these as IPv4 addresses.
            "http://2130706433/",
            "http://0x7f.1/",
        ] {
            let e = policy.check_url("callback_url", url).unwrap_err();
            assert_eq!(e.field, "callback_url", "{url}");
            assert!(e.message.contains("--callback-allow-net"), "{url}: {e}");
        }
        for url in [
            "https://example.com/hook",
            "http://93.184.216.34/",
            "http://[2001:4860:4860::8888]/",
            "http://localhost.example.com/",
        ] {
            assert_eq!(policy.check_url("callback_url", url), Ok(()), "{url}");
        }
        let loopback = AddressPolicy::new(vec![parse_allowed_net("127.0.0.1/32").unwrap()]);
        assert_eq!(
            loopback.check_url("callback_url", "http://127.0.0.1:8080/"),
            Ok(())
        );
        assert_eq!(
            loopback.check_url("callback_url", "http://localhost:8080/"),
            Ok(())
        );
        assert!(loopback.check_url("callback_url", "http://[::1]/").is_err());
    }

    #[test]
    fn a_refusal_names_the_address_its_range_and_the_flag() {
        let e = AddressPolicy::default()
            .check(ip("169.254.169.254"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the address 169.254.169.254 is a link-local address and callbacks may not reach \
             it (allow its network with --callback-allow-net)"
        );
        let e = AddressPolicy::default().check(ip("::1")).unwrap_err();
        assert!(e.to_string().contains("is a loopback address"), "{e}");
        let e = AddressPolicy::default().check(ip("0.0.0.0")).unwrap_err();
        assert!(e.to_string().contains("is an unspecified address"), "{e}");
    }
}
