//! Where validation may connect. vacme holds a token that can sign for the internal zone, so a
//! challenge must not turn it into a client that probes the network for whoever asks: link-local
//! (and so cloud metadata) and unspecified addresses are never contacted, loopback and private
//! ranges only when the operator lists them (`validation.allowed_targets`, empty by default).
//! The one exception is a name under `.localhost` (RFC 6761 §6.3): it resolves only to loopback,
//! so it is validated there (the zero-config quickstart), and only there.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The validation-target policy.
#[derive(Clone, Debug)]
pub struct TargetPolicy {
    allowed: Vec<IpNet>,
}

impl TargetPolicy {
    /// `allowed` lists the loopback/private ranges that may be contacted.
    pub fn new(allowed: Vec<IpNet>) -> Self {
        Self { allowed }
    }

    /// This policy with loopback added: the policy for validating a `.localhost` name, which
    /// RFC 6761 §6.3 puts on loopback and nowhere else.
    pub fn with_loopback(&self) -> Self {
        let mut allowed = self.allowed.clone();
        allowed.extend(IpNet::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8).ok());
        allowed.push(IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        Self { allowed }
    }

    /// Ok, or why vacme does not connect to `ip` (worded for the domain owner).
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        let carried = canonical(ip);
        // Name the address as resolved, and what it carries when that differs.
        let shown = if carried == ip { ip.to_string() } else { format!("{ip} (which carries {carried})") };
        if let Some(why) = never(carried) {
            return Err(format!("vacme does not connect to {shown} ({why})"));
        }
        if let Some(kind) = restricted(carried)
            && !self.allowed.iter().any(|net| net.contains(&carried))
        {
            return Err(format!(
                "vacme does not connect to {shown}: {kind} addresses are not in validation.allowed_targets"
            ));
        }
        Ok(())
    }
}

/// `localhost` or a name under `.localhost` (RFC 6761 §6.3), as identifiers spell it.
pub fn is_localhost_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// IPv6 forms that carry an IPv4 address are judged as that address: a router or NAT64 gateway
/// delivers them to it, so `64:ff9b::7f00:1` is as much loopback as 127.0.0.1.
fn canonical(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    let seg = v6.segments();
    let o = v6.octets();
    let low32 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    if let Some(v4) = v6.to_ipv4_mapped() {
        // RFC 4291 §2.5.5.2: ::ffff:a.b.c.d, IPv4-mapped.
        IpAddr::V4(v4)
    } else if seg[..6] == [0; 6] && !v6.is_unspecified() && !v6.is_loopback() {
        // RFC 4291 §2.5.5.1: ::a.b.c.d, IPv4-compatible (deprecated, still routed by some stacks).
        IpAddr::V4(low32)
    } else if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // RFC 6052 §2.1: the NAT64 well-known prefix 64:ff9b::/96.
        IpAddr::V4(low32)
    } else if seg[0] == 0x2002 {
        // RFC 3056 §2: 6to4, 2002:V4ADDR::/48, the IPv4 address in bits 16..48.
        IpAddr::V4(Ipv4Addr::new(o[2], o[3], o[4], o[5]))
    } else {
        ip
    }
}

/// Addresses never contacted, whatever the configuration says.
fn never(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_unspecified() || v4.octets()[0] == 0 {
                Some("unspecified")
            } else if v4 == Ipv4Addr::new(169, 254, 169, 254) {
                Some("the cloud metadata address")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_multicast() || v4.is_broadcast() {
                Some("multicast or broadcast")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
                Some("the cloud metadata address")
            } else if seg[0] & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

/// Addresses contacted only when listed.
fn restricted(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => Some("loopback"),
        IpAddr::V4(v4) if v4.is_private() => Some("private"),
        // RFC 6598 shared address space (carrier-grade NAT).
        IpAddr::V4(v4) if v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 => Some("shared (CGNAT)"),
        IpAddr::V6(v6) if v6.is_loopback() => Some("loopback"),
        IpAddr::V6(v6) if v6.segments()[0] & 0xfe00 == 0xfc00 => Some("unique local (private)"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_metadata_link_local_or_unspecified() {
        let p = TargetPolicy::new(vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()]);
        for ip in [
            "169.254.169.254",
            "169.254.1.1",
            "0.0.0.0",
            "fe80::1",
            "::",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "224.0.0.1",
        ] {
            assert!(p.check(ip.parse().unwrap()).is_err(), "{ip} must be refused even when everything is listed");
        }
    }

    #[test]
    fn loopback_and_private_only_when_listed() {
        let none = TargetPolicy::new(vec![]);
        for ip in ["127.0.0.1", "10.1.2.3", "192.168.1.10", "172.16.0.1", "::1", "fd12::1", "100.64.0.1"] {
            assert!(none.check(ip.parse().unwrap()).is_err(), "{ip}");
        }
        assert!(none.check("203.0.113.7".parse().unwrap()).is_ok(), "public addresses need no listing");
        let lab = TargetPolicy::new(vec!["127.0.0.0/8".parse().unwrap(), "10.0.0.0/8".parse().unwrap()]);
        assert!(lab.check("127.0.0.1".parse().unwrap()).is_ok());
        assert!(lab.check("10.1.2.3".parse().unwrap()).is_ok());
        let e = lab.check("192.168.1.10".parse().unwrap()).unwrap_err();
        assert!(e.contains("private"), "{e}");
    }

    #[test]
    fn ipv6_forms_carrying_ipv4_are_judged_as_that_ipv4() {
        let none = TargetPolicy::new(vec![]);
        let lab = TargetPolicy::new(vec!["127.0.0.0/8".parse().unwrap(), "10.0.0.0/8".parse().unwrap()]);
        // (address, what it carries, refused with nothing listed, refused with the lab's list)
        let table: &[(&str, &str, Option<&str>, Option<&str>)] = &[
            // RFC 4291 IPv4-mapped.
            ("::ffff:127.0.0.1", "127.0.0.1", Some("loopback"), None),
            ("::ffff:10.1.2.3", "10.1.2.3", Some("private"), None),
            ("::ffff:169.254.169.254", "169.254.169.254", Some("cloud metadata"), Some("cloud metadata")),
            // RFC 4291 IPv4-compatible.
            ("::127.0.0.1", "127.0.0.1", Some("loopback"), None),
            ("::192.168.1.10", "192.168.1.10", Some("private"), Some("private")),
            ("::169.254.169.254", "169.254.169.254", Some("cloud metadata"), Some("cloud metadata")),
            // RFC 6052 NAT64 well-known prefix.
            ("64:ff9b::7f00:1", "127.0.0.1", Some("loopback"), None),
            ("64:ff9b::10.9.8.7", "10.9.8.7", Some("private"), None),
            ("64:ff9b::a9fe:a9fe", "169.254.169.254", Some("cloud metadata"), Some("cloud metadata")),
            ("64:ff9b::c0a8:10a", "192.168.1.10", Some("private"), Some("private")),
            // RFC 3056 6to4: the IPv4 address in bits 16..48, whatever follows.
            ("2002:7f00:1::", "127.0.0.1", Some("loopback"), None),
            ("2002:a01:203:1::5", "10.1.2.3", Some("private"), None),
            ("2002:a9fe:a9fe::1", "169.254.169.254", Some("cloud metadata"), Some("cloud metadata")),
            ("2002:6440:1::", "100.64.0.1", Some("CGNAT"), Some("CGNAT")),
            // Public IPv4 inside: as public as the address itself.
            ("64:ff9b::cb00:7107", "203.0.113.7", None, None),
            ("2002:cb00:7107::", "203.0.113.7", None, None),
            ("::ffff:203.0.113.7", "203.0.113.7", None, None),
        ];
        for (ip, carried, without, with) in table {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(canonical(ip), carried.parse::<IpAddr>().unwrap(), "{ip}");
            for (policy, want, which) in [(&none, without, "none"), (&lab, with, "lab")] {
                match (policy.check(ip), want) {
                    (Ok(()), None) => {}
                    (Err(e), Some(kind)) => {
                        assert!(e.contains(kind), "{ip} ({which}): {e}");
                        assert!(e.contains(&format!("which carries {carried}")), "{ip} ({which}): {e}");
                    }
                    (got, want) => panic!("{ip} with {which}: got {got:?}, want a refusal of {want:?}"),
                }
            }
        }
        // Plain IPv6 loopback, unspecified and public addresses are not read as IPv4.
        assert_eq!(canonical("::1".parse().unwrap()), "::1".parse::<IpAddr>().unwrap());
        assert_eq!(canonical("::".parse().unwrap()), "::".parse::<IpAddr>().unwrap());
        assert!(none.check("2001:db8::7f00:1".parse().unwrap()).is_ok());
    }

    #[test]
    fn localhost_names_get_loopback_and_only_loopback() {
        let base = TargetPolicy::new(vec![]);
        let local = base.with_loopback();
        for ip in ["127.0.0.1", "127.5.6.7", "::1", "::ffff:127.0.0.1"] {
            assert!(base.check(ip.parse().unwrap()).is_err(), "{ip}");
            assert!(local.check(ip.parse().unwrap()).is_ok(), "{ip}");
        }
        for ip in ["10.1.2.3", "192.168.1.10", "fd12::1", "169.254.169.254"] {
            assert!(local.check(ip.parse().unwrap()).is_err(), "{ip}: a .localhost name gets loopback only");
        }
        for (name, yes) in [
            ("localhost", true),
            ("host.localhost", true),
            ("A.B.LocalHost", true),
            ("localhost.lab.test", false),
            ("notlocalhost", false),
            ("evil-localhost.test", false),
        ] {
            assert_eq!(is_localhost_name(name), yes, "{name}");
        }
    }
}
