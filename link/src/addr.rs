//! Hub addresses: `wss://host:port/node`, `host:port`, `[::1]:7420`, parsed once when a
//! configuration loads.

use std::fmt;
use std::str::FromStr;

/// A hub address: `wss://host:port/node`, `host:port`, `[::1]:7420`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubAddr {
    /// A DNS name or an IP address (IPv6 without brackets).
    pub host: String,
    /// The TCP port ([`DEFAULT_PORT`] when none is written).
    pub port: u16,
    /// The HTTP path of the node endpoint (`/node` when none is written).
    pub path: String,
}

/// The hub's default port.
pub const DEFAULT_PORT: u16 = 7420;

/// A hub address that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hub address {input:?}: {why} (write wss://HOST:PORT, e.g. wss://127.0.0.1:7420)")]
pub struct AddrError {
    /// What was written.
    pub input: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl FromStr for HubAddr {
    type Err = AddrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &'static str| AddrError {
            input: s.to_string(),
            why,
        };
        let rest = s.trim();
        let rest = if let Some(r) = rest.strip_prefix("wss://") {
            r
        } else if rest.contains("://") {
            return Err(bad("only wss:// is spoken"));
        } else {
            rest
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/node"),
        };
        let path = if path == "/" { "/node" } else { path };
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let end = r.find(']').ok_or_else(|| bad("unclosed '['"))?;
            let host = &r[..end];
            let port = match &r[end + 1..] {
                "" => DEFAULT_PORT,
                p => p
                    .strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| bad("bad port"))?,
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad("bad port"))?),
                None => (authority.to_string(), DEFAULT_PORT),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(HubAddr {
            host,
            port,
            path: path.to_string(),
        })
    }
}

impl fmt::Display for HubAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "wss://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "wss://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

impl<'de> serde::Deserialize<'de> for HubAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_addresses() {
        let a: HubAddr = "wss://127.0.0.1:9000".parse().expect("parses");
        assert_eq!(
            (a.host.as_str(), a.port, a.path.as_str()),
            ("127.0.0.1", 9000, "/node")
        );
        let b: HubAddr = "[::1]:9001".parse().expect("parses");
        assert_eq!((b.host.as_str(), b.port), ("::1", 9001));
        assert_eq!(b.to_string(), "wss://[::1]:9001/node");
        let c: HubAddr = "hub.example.com".parse().expect("parses");
        assert_eq!(c.port, DEFAULT_PORT);
        assert!("http://x:1".parse::<HubAddr>().is_err());
        assert!("x:notaport".parse::<HubAddr>().is_err());
    }
}
