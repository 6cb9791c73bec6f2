//! Where validation may connect. vacme holds a token that can sign for the internal zone, so a
//! challenge must not turn it into a client that probes the network for whoever asks: link-local
//! (and so cloud metadata) and unspecified addresses are never contacted, loopback and private
//! ranges only when the operator lists them.

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

    /// Ok, or why vacme does not connect to `ip` (worded for the domain owner).
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        let ip = canonical(ip);
        if let Some(why) = never(ip) {
            return Err(format!("vacme does not connect to {ip} ({why})"));
        }
        if let Some(kind) = restricted(ip)
            && !self.allowed.iter().any(|net| net.contains(&ip))
        {
            return Err(format!(
                "vacme does not connect to {ip}: {kind} addresses are not in validation.allowed_targets"
            ));
        }
        Ok(())
    }
}

/// IPv4-mapped IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
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
}
