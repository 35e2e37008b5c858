//! A socket's fields as the kernel writes them, as people read them: its address from 16 bytes
//! and the family, the family's label, a command name.
use std::{
    borrow::Cow,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use tcpmon_common::AF_INET;

/// "inet" or "inet6".
pub fn family_label(family: u16) -> &'static str {
    if family == AF_INET {
        "inet"
    } else {
        "inet6"
    }
}

/// A kernel command name: NUL-padded bytes.
pub fn comm_name(raw: &[u8; 16]) -> Cow<'_, str> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end])
}

/// An address from the record; IPv4-mapped IPv6 addresses become plain IPv4.
pub fn address(family: u16, bytes: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        return IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]));
    }
    let v6 = Ipv6Addr::from(*bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// `addr:port`, with brackets for IPv6.
pub fn endpoint(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_ipv4_mapped_addresses_to_ipv4() {
        let mut mapped = [0u8; 16];
        mapped[10] = 0xff;
        mapped[11] = 0xff;
        mapped[12..].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(
            address(10, &mapped),
            "10.1.2.3".parse::<IpAddr>().expect("an address")
        );
        let v6: [u8; 16] = "2001:db8::1"
            .parse::<Ipv6Addr>()
            .expect("an address")
            .octets();
        assert_eq!(
            address(10, &v6),
            "2001:db8::1".parse::<IpAddr>().expect("an address")
        );
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(
            address(AF_INET, &v4),
            "127.0.0.1".parse::<IpAddr>().expect("an address")
        );
    }
}
