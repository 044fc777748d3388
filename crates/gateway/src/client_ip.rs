//! Which client a request comes from, for auth's per-address login budget
//! and the `X-Forwarded-For` proxy mode sends on.
//!
//! It is the TCP peer, unless the peer is one of our own proxies
//! (`TRUSTED_PROXIES`): then it is the right-most `X-Forwarded-For` entry
//! that is not itself a trusted proxy. Entries left of that one were written
//! by the client (or by proxies we do not know), so they prove nothing: a
//! client that sends `X-Forwarded-For: 1.2.3.4` to spread its logins over
//! fake addresses only ever adds entries on the left.

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    str::FromStr,
    sync::Arc,
};

use axum::{
    extract::{ConnectInfo, FromRef, FromRequestParts},
    http::{HeaderMap, HeaderValue, request::Parts},
};
use ipnet::IpNet;

/// The header proxies append the address they received a request from to.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// The networks whose `X-Forwarded-For` we believe (`TRUSTED_PROXIES`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl FromStr for TrustedProxies {
    type Err = String;

    /// Comma-separated IP addresses and CIDR networks; empty for none.
    fn from_str(list: &str) -> Result<Self, String> {
        list.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                IpNet::from_str(entry)
                    .map(|net| net.trunc())
                    .or_else(|_| IpAddr::from_str(entry).map(IpNet::from))
                    .map_err(|_| format!("{entry:?} is neither an IP address nor a CIDR network"))
            })
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }
}

impl TrustedProxies {
    fn trust(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that came from `peer` with `headers`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trust(client) {
            return client;
        }
        // Several X-Forwarded-For headers are one list, in order.
        let values: Vec<&HeaderValue> = headers.get_all(FORWARDED_FOR).iter().collect();
        let entries = values
            .iter()
            .rev()
            .flat_map(|value| value.to_str().unwrap_or("\u{0}").rsplit(','));
        for entry in entries {
            match forwarded_ip(entry) {
                Some(ip) => client = ip,
                // Nothing a trusted proxy writes: stay with the last hop
                // we can vouch for.
                None => return client,
            }
            if !self.trust(client) {
                return client;
            }
        }
        // Every hop is ours (a probe through the proxy, say): the first.
        client
    }
}

/// One `X-Forwarded-For` entry: an address, maybe with a port (some proxies
/// add one), IPv6 maybe in brackets.
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let ip = IpAddr::from_str(entry)
        .ok()
        .or_else(|| SocketAddr::from_str(entry).ok().map(|addr| addr.ip()))
        .or_else(|| {
            let inner = entry.strip_prefix('[')?.strip_suffix(']')?;
            IpAddr::from_str(inner).ok()
        })?;
    Some(ip.to_canonical())
}

/// The client address of the request, when the server knows its peer (it
/// is served with connect info; a router driven without a socket has none).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

/// From any state that yields the trusted proxies (the gateway's
/// `AppState` does).
impl<S> FromRequestParts<S> for ClientIp
where
    S: Send + Sync,
    Arc<TrustedProxies>: FromRef<S>,
{
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Infallible> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let trusted_proxies = Arc::<TrustedProxies>::from_ref(state);
        Ok(ClientIp(peer.map(|peer| {
            trusted_proxies.client_ip(peer, &parts.headers)
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(FORWARDED_FOR, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn trusted(list: &str) -> TrustedProxies {
        list.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        let none = TrustedProxies::default();
        let spoofed = headers(&["1.2.3.4"]);
        assert_eq!(
            none.client_ip(ip("203.0.113.9"), &spoofed),
            ip("203.0.113.9")
        );
        let other = trusted("10.0.0.0/8");
        assert_eq!(
            other.client_ip(ip("203.0.113.9"), &spoofed),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_spoofed_entries_are_ignored() {
        let proxies = trusted("10.0.0.0/8, 192.0.2.7");
        let peer = ip("10.1.2.3");
        assert_eq!(
            proxies.client_ip(peer, &headers(&["198.51.100.1"])),
            ip("198.51.100.1")
        );
        // The client wrote the left-most entries itself.
        assert_eq!(
            proxies.client_ip(peer, &headers(&["1.1.1.1, 6.6.6.6, 198.51.100.1"])),
            ip("198.51.100.1")
        );
        // A chain of our own proxies, in one header or in several.
        assert_eq!(
            proxies.client_ip(
                peer,
                &headers(&["1.1.1.1, 198.51.100.1, 192.0.2.7, 10.9.9.9"])
            ),
            ip("198.51.100.1")
        );
        assert_eq!(
            proxies.client_ip(peer, &headers(&["1.1.1.1, 198.51.100.1", "192.0.2.7"])),
            ip("198.51.100.1")
        );
        // No header: the proxy itself.
        assert_eq!(proxies.client_ip(peer, &HeaderMap::new()), peer);
        // Every hop ours: the first of them.
        assert_eq!(
            proxies.client_ip(peer, &headers(&["10.0.0.5,192.0.2.7"])),
            ip("10.0.0.5")
        );
    }

    #[test]
    fn ipv6_ports_brackets_and_mapped_addresses() {
        let proxies = trusted("fd00::/8, 127.0.0.1");
        assert_eq!(
            proxies.client_ip(ip("fd00::1"), &headers(&["2001:db8::5"])),
            ip("2001:db8::5")
        );
        assert_eq!(
            proxies.client_ip(ip("fd00::1"), &headers(&["[2001:db8::5]:4711"])),
            ip("2001:db8::5")
        );
        assert_eq!(
            proxies.client_ip(ip("fd00::1"), &headers(&["[2001:db8::5]"])),
            ip("2001:db8::5")
        );
        assert_eq!(
            proxies.client_ip(ip("fd00::1"), &headers(&["198.51.100.1:1234"])),
            ip("198.51.100.1")
        );
        // A dual-stack listener sees an IPv4 proxy as ::ffff:a.b.c.d.
        assert_eq!(
            proxies.client_ip(ip("::ffff:127.0.0.1"), &headers(&["::ffff:198.51.100.1"])),
            ip("198.51.100.1")
        );
    }

    #[test]
    fn garbage_stops_at_the_last_hop_we_trust() {
        let proxies = trusted("10.0.0.0/8");
        let peer = ip("10.0.0.1");
        for garbage in ["unknown", "", "1.2.3", "not an ip", "1.2.3.4.5", "[::1"] {
            assert_eq!(
                proxies.client_ip(peer, &headers(&[&format!("6.6.6.6, {garbage}")])),
                peer,
                "{garbage:?}"
            );
        }
        assert_eq!(
            proxies.client_ip(peer, &headers(&["garbage, 10.0.0.2"])),
            ip("10.0.0.2")
        );
        let mut non_ascii = HeaderMap::new();
        non_ascii.insert(
            FORWARDED_FOR,
            HeaderValue::from_bytes(b"6.6.6.6, \xff").unwrap(),
        );
        assert_eq!(proxies.client_ip(peer, &non_ascii), peer);
    }

    #[test]
    fn the_list_is_checked() {
        assert_eq!(trusted(""), TrustedProxies::default());
        assert_eq!(trusted(" 10.0.0.0/8 ,, ::1 ").0.len(), 2);
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("proxy.internal".parse::<TrustedProxies>().is_err());
        // Host bits in a network are dropped, not a reason to refuse.
        assert!(trusted("10.1.2.3/8").trust(ip("10.200.0.1")));
    }
}
