//! Discovery for the `Startup` report: hostname, interface addresses, default gateway and
//! the LLDP neighbour, each read from the system where available.

use proto::{InterfaceAddr, LldpNeighbour};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// The host name from the kernel (empty if unreadable).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Every interface address except loopback.
pub fn interfaces() -> Vec<InterfaceAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ifa in addrs {
        let (Some(addr), netmask) = (ifa.address, ifa.netmask) else {
            continue;
        };
        let (ip, prefix_len) = if let Some(v4) = addr.as_sockaddr_in() {
            let mask = netmask
                .and_then(|m| m.as_sockaddr_in().map(|m| u32::from(m.ip()).count_ones()))
                .unwrap_or(32);
            (IpAddr::V4(v4.ip()), mask as u8)
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            let mask = netmask
                .and_then(|m| m.as_sockaddr_in6().map(|m| u128::from(m.ip()).count_ones()))
                .unwrap_or(128);
            (IpAddr::V6(v6.ip()), mask as u8)
        } else {
            continue;
        };
        if ip.is_loopback() {
            continue;
        }
        out.push(InterfaceAddr {
            name: ifa.interface_name,
            addr: ip,
            prefix_len,
        });
    }
    out
}

/// The default IPv4 gateway from `/proc/net/route`.
pub fn default_gateway() -> Option<IpAddr> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    parse_route_table(&text)
}

/// Finds the default route's gateway in the text of `/proc/net/route` (addresses are
/// hexadecimal in host byte order, i.e. little-endian on common hardware).
pub fn parse_route_table(text: &str) -> Option<IpAddr> {
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 3 || fields[1] != "00000000" {
            continue;
        }
        let gw = u32::from_str_radix(fields[2], 16).ok()?;
        if gw == 0 {
            continue;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(gw.to_le_bytes())));
    }
    None
}

/// The MAC address of `ip` from the kernel's ARP table (`/proc/net/arp`), if resolved.
pub fn arp_mac(ip: IpAddr) -> Option<String> {
    let text = std::fs::read_to_string("/proc/net/arp").ok()?;
    parse_arp_table(&text, ip)
}

/// Finds the complete entry of `ip` in the text of `/proc/net/arp`.
pub fn parse_arp_table(text: &str, ip: IpAddr) -> Option<String> {
    let wanted = ip.to_string();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // IP address, HW type, Flags (0x2: complete), HW address, Mask, Device.
        if fields.len() < 4 || fields[0] != wanted {
            continue;
        }
        let complete =
            u32::from_str_radix(fields[2].trim_start_matches("0x"), 16).is_ok_and(|f| f & 0x2 != 0);
        if complete && fields[3] != "00:00:00:00:00:00" {
            return Some(fields[3].to_ascii_lowercase());
        }
    }
    None
}

/// The LLDP neighbour as reported by `lldpctl -f keyvalue` (lldpd), if installed and it
/// knows one; bounded to two seconds so a hung daemon cannot stall start-up.
pub fn lldp_neighbour() -> Option<LldpNeighbour> {
    let mut child = std::process::Command::new("lldpctl")
        .args(["-f", "keyvalue"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
    let mut text = String::new();
    use std::io::Read;
    child.stdout.take()?.read_to_string(&mut text).ok()?;
    parse_lldpctl_keyvalue(&text)
}

/// Parses `lldpctl -f keyvalue` output (`lldp.<iface>.chassis.mac=...` lines); the first
/// interface with a chassis id wins.
pub fn parse_lldpctl_keyvalue(text: &str) -> Option<LldpNeighbour> {
    let mut chassis_id = None;
    let mut port_id = None;
    let mut system_name = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let mut parts = key.splitn(3, '.');
        let (Some("lldp"), Some(_iface), Some(field)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let value = value.trim().to_string();
        match field {
            "chassis.mac" | "chassis.id" if chassis_id.is_none() => chassis_id = Some(value),
            "chassis.name" if system_name.is_none() => system_name = Some(value),
            "port.ifname" | "port.mac" | "port.local" if port_id.is_none() => port_id = Some(value),
            _ => {}
        }
    }
    Some(LldpNeighbour {
        chassis_id: chassis_id?,
        port_id: port_id.unwrap_or_default(),
        system_name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_default_route() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
                    eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n\
                    eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\n";
        assert_eq!(
            parse_route_table(text),
            Some(IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1)))
        );
        assert_eq!(parse_route_table("Iface\tDestination\n"), None);
    }

    #[test]
    fn parses_arp_table() {
        let text =
            "IP address       HW type     Flags       HW address            Mask     Device\n\
                    198.18.1.7       0x1         0x0         00:00:00:00:00:00     *        eth0\n\
                    198.18.1.1       0x1         0x2         02:52:57:00:00:01     *        eth0\n";
        let gw = IpAddr::V4(Ipv4Addr::new(198, 18, 1, 1));
        assert_eq!(parse_arp_table(text, gw), Some("02:52:57:00:00:01".into()));
        assert_eq!(parse_arp_table(text, "198.18.1.7".parse().unwrap()), None);
        assert_eq!(parse_arp_table("", gw), None);
    }

    #[test]
    fn parses_lldpctl() {
        let text = "lldp.eth0.via=LLDP\nlldp.eth0.chassis.mac=00:11:22:33:44:55\n\
                    lldp.eth0.chassis.name=sw1\nlldp.eth0.port.ifname=Gi0/1\n";
        assert_eq!(
            parse_lldpctl_keyvalue(text),
            Some(LldpNeighbour {
                chassis_id: "00:11:22:33:44:55".into(),
                port_id: "Gi0/1".into(),
                system_name: Some("sw1".into()),
            })
        );
        assert_eq!(parse_lldpctl_keyvalue(""), None);
    }

    #[test]
    fn reads_this_host() {
        // Loopback is excluded; the hostname is present on any Linux host.
        assert!(interfaces().iter().all(|i| !i.addr.is_loopback()));
        assert!(!hostname().is_empty());
    }
}
