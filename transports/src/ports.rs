//! Picking a UDP port (QUIC) or a TCP port (the HTTP endpoint) for a node
//! before it starts, for local clusters, demos and tests, where every
//! node's address goes into every other node's config first.
//!
//! The usual trick (bind port 0, read the port, close the socket) leaves a
//! window in which any other socket bound to port 0 on the machine (another
//! test, a QUIC client endpoint) may be handed the same port by the kernel,
//! and the node then fails to bind with `AddrInUse`; a node restarted on
//! its old port after a crash has the same window. [`unused_udp_port`]
//! instead picks a port outside the kernel's ephemeral range (the range
//! port 0 draws from: read from `/proc/sys/net/ipv4/ip_local_port_range`,
//! 32768-60999 by default on Linux), so only another explicit choice of the
//! same port can collide, and it checks that the port is free now. (A host
//! whose ephemeral range leaves no room outside it loses that protection;
//! the port is still checked free.) It never hands the same port out twice in one process (a local
//! cluster picks all its nodes' ports before any node binds one). The
//! guarantee is "free when checked", nothing more.

use std::collections::BTreeSet;
use std::net::{IpAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Linux's default ephemeral range, when the host's cannot be read.
const DEFAULT_EPHEMERAL: (u16, u16) = (32_768, 60_999);
/// How many ports to draw from.
const SPAN: u16 = 12_000;
/// Lowest port ever drawn (well above the registered well-known services).
const LOWEST: u16 = 10_000;

/// The ports drawn from, `start..end`: the `SPAN` ports just below the
/// ephemeral range `low..=high`, or just above it if there is no room
/// below, or `20000..32000` if there is none either.
fn outside(low: u16, high: u16) -> (u16, u16) {
    if low >= LOWEST + SPAN {
        (low - SPAN, low)
    } else if high <= u16::MAX - SPAN {
        (high + 1, high + 1 + SPAN)
    } else {
        (20_000, 32_000)
    }
}

/// This host's candidate range (read once).
fn candidates() -> (u16, u16) {
    static RANGE: std::sync::OnceLock<(u16, u16)> = std::sync::OnceLock::new();
    *RANGE.get_or_init(|| {
        let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|text| {
                let mut it = text.split_whitespace().map(|n| n.parse::<u16>().ok());
                Some((it.next()??, it.next()??))
            })
            .filter(|(low, high)| low <= high)
            .unwrap_or(DEFAULT_EPHEMERAL);
        outside(low, high)
    })
}

/// A UDP port on `ip` that was free just now, chosen at random outside the
/// ephemeral port range and not handed out before by this process (see the
/// module docs); if none of 64 tries is both, one from the kernel (port 0).
/// `None` only if `ip` cannot be bound at all (for example, an address of
/// another host).
pub fn unused_udp_port(ip: IpAddr) -> Option<u16> {
    unused_port(|port| UdpSocket::bind((ip, port))?.local_addr())
}

/// [`unused_udp_port`] for a TCP listener. One process never gets the same
/// number from both.
pub fn unused_tcp_port(ip: IpAddr) -> Option<u16> {
    unused_port(|port| TcpListener::bind((ip, port))?.local_addr())
}

/// A port that `bind` could bind (see [`unused_udp_port`]).
fn unused_port(bind: impl Fn(u16) -> std::io::Result<std::net::SocketAddr>) -> Option<u16> {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    /// Ports this process was handed (at most `SPAN` of them).
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let (first, end) = candidates();
    let mut x = seed()
        ^ CALLS
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for _ in 0..64 {
        // xorshift64*: plenty for spreading ports between processes.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let port = first + (r % u64::from(end - first)) as u16;
        if given.contains(&port) {
            continue;
        }
        match bind(port) {
            Ok(_) => {
                given.insert(port);
                return Some(port);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => return None,
            Err(_) => {}
        }
    }
    bind(0).map(|a| a.port()).ok()
}

/// Different in every process and every call site's time.
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos ^ (u64::from(std::process::id()) << 32)) | 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn the_port_is_free_and_below_the_ephemeral_range() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        for _ in 0..20 {
            let port = unused_udp_port(ip).expect("loopback binds");
            let (first, end) = candidates();
            assert!((first..end).contains(&port), "{port}");
            UdpSocket::bind((ip, port)).expect("still free");
        }
    }

    #[test]
    fn the_range_is_outside_the_ephemeral_one_wherever_there_is_room() {
        assert_eq!(outside(32_768, 60_999), (20_768, 32_768));
        // A range starting low: above it.
        assert_eq!(outside(15_000, 40_000), (40_001, 52_001));
        // No room on either side: a fixed range, checked free as always.
        assert_eq!(outside(1_024, 65_535), (20_000, 32_000));
        let (first, end) = candidates();
        assert!(first < end && end - first >= 8_000, "{first}..{end}");
    }

    #[test]
    fn a_port_in_use_is_not_chosen() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let held: Vec<UdpSocket> = (0..50)
            .map(|_| UdpSocket::bind((ip, unused_udp_port(ip).unwrap())).unwrap())
            .collect();
        let taken: Vec<u16> = held
            .iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect();
        for _ in 0..200 {
            let port = unused_udp_port(ip).unwrap();
            assert!(!taken.contains(&port), "{port} is held");
        }
    }

    #[test]
    fn one_process_is_never_handed_the_same_port_twice() {
        // A local cluster picks every node's port before any node binds
        // it: two picks must not be the same free port.
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..2000 {
            let port = unused_udp_port(ip).expect("loopback binds");
            assert!(seen.insert(port), "{port} handed out twice");
        }
    }

    #[test]
    fn an_address_of_another_host_has_no_port() {
        // TEST-NET-3: never assigned to this machine.
        assert_eq!(unused_udp_port("203.0.113.7".parse().unwrap()), None);
        assert_eq!(unused_tcp_port("203.0.113.7".parse().unwrap()), None);
    }

    #[test]
    fn a_tcp_port_is_free_for_tcp_and_never_also_handed_out_for_udp() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let tcp = unused_tcp_port(ip).expect("loopback binds");
            TcpListener::bind((ip, tcp)).expect("still free");
            assert!(seen.insert(tcp), "{tcp} handed out twice");
            let udp = unused_udp_port(ip).expect("loopback binds");
            assert!(seen.insert(udp), "{udp} handed out twice");
        }
    }
}
