//! Who may connect to the peer port at all.
//!
//! Every connection to the peer port costs a TLS handshake before its
//! certificate says who it is, so the port first looks at where the
//! connection comes from: the addresses the configured nodes' names
//! resolve to, and the networks listed in `listen.peer_sources` (for
//! peers whose connections come from another address than the one they
//! are known by: a second interface, NAT). Anything else is closed before
//! any TLS work. Names are resolved again every [`REFRESH`], so a node
//! that moves is let in once its name says so; a name that stops
//! resolving keeps the addresses it had.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::RwLock;
use std::time::Duration;

/// How often the nodes' names are resolved again.
pub const REFRESH: Duration = Duration::from_secs(30);

/// A network: an address and how many leading bits of it count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Net {
    addr: IpAddr,
    bits: u8,
}

impl std::str::FromStr for Net {
    type Err = String;

    /// `10.0.0.0/8`, `fd00::/8`, or one address (`10.1.2.3`).
    fn from_str(s: &str) -> Result<Net, String> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or a network like 10.0.0.0/8"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&b| b <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Net { addr, bits })
    }
}

impl Net {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.bits),
            _ => false,
        }
    }
}

/// Whether the first `bits` bits of `a` and `b` are the same.
fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let whole = bits as usize / 8;
    let rest = bits % 8;
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

/// The sources the peer port takes connections from.
#[derive(Debug)]
pub struct Sources {
    nets: Vec<Net>,
    /// The host part of every node's address.
    hosts: Vec<String>,
    /// What each host resolved to last.
    resolved: RwLock<HashMap<String, Vec<IpAddr>>>,
}

impl Sources {
    /// Sources for nodes at `addrs` (`host:port`) and the extra `nets`.
    pub fn new(addrs: &[String], nets: Vec<Net>) -> Sources {
        let hosts = addrs
            .iter()
            .map(|a| {
                let host = a.rsplit_once(':').map_or(a.as_str(), |(h, _)| h);
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string()
            })
            .collect();
        Sources {
            nets,
            hosts,
            resolved: RwLock::new(HashMap::new()),
        }
    }

    /// Whether a connection from `ip` is taken.
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        if self.nets.iter().any(|n| n.contains(ip)) {
            return true;
        }
        let resolved = self.resolved.read().unwrap_or_else(|e| e.into_inner());
        resolved.values().flatten().any(|&a| a.to_canonical() == ip)
    }

    /// Resolve every node's host again.
    pub async fn refresh(&self) {
        for host in &self.hosts {
            let found: Vec<IpAddr> = match host.parse::<IpAddr>() {
                Ok(ip) => vec![ip],
                Err(_) => match tokio::net::lookup_host((host.as_str(), 0)).await {
                    Ok(addrs) => addrs.map(|a| a.ip()).collect(),
                    Err(e) => {
                        tracing::warn!(%host, "cannot resolve a node's name to let it in: {e}");
                        continue;
                    }
                },
            };
            if !found.is_empty() {
                self.resolved
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(host.clone(), found);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn networks_parse_and_contain() {
        let n: Net = "10.1.0.0/16".parse().expect("net");
        assert!(n.contains(ip("10.1.200.3")));
        assert!(!n.contains(ip("10.2.0.1")));
        // A v4 peer on a dual-stack socket.
        assert!(n.contains(ip("::ffff:10.1.0.9")));
        let odd: Net = "192.168.1.128/25".parse().expect("net");
        assert!(odd.contains(ip("192.168.1.200")));
        assert!(!odd.contains(ip("192.168.1.127")));
        let one: Net = "fd00::1".parse().expect("net");
        assert!(one.contains(ip("fd00::1")) && !one.contains(ip("fd00::2")));
        let any: Net = "0.0.0.0/0".parse().expect("net");
        assert!(any.contains(ip("203.0.113.9")) && !any.contains(ip("fd00::1")));
        for bad in ["10.0.0.0/33", "nope", "10.0.0.0/x", "::/129"] {
            assert!(bad.parse::<Net>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn nodes_are_let_in_by_their_names_and_addresses() {
        let s = Sources::new(
            &[
                "127.0.0.1:9080".into(),
                "localhost:9081".into(),
                "[::1]:9082".into(),
            ],
            vec!["10.9.0.0/16".parse().expect("net")],
        );
        assert!(
            !s.allows(ip("127.0.0.1")),
            "nothing before the first resolution"
        );
        assert!(
            s.allows(ip("10.9.3.4")),
            "extra networks need no resolution"
        );
        s.refresh().await;
        assert!(s.allows(ip("127.0.0.1")));
        assert!(s.allows(ip("::1")));
        assert!(!s.allows(ip("127.0.0.2")));
        assert!(!s.allows(ip("192.0.2.1")));
    }
}
