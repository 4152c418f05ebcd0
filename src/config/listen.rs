//! The listen address: a host (IP address or name) and a port.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use serde::Deserialize;

/// Where to listen: an IP address or a host name, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    pub host: String,
    pub port: u16,
}

impl ListenAddr {
    /// The addresses the host resolves to (a name may give several), IPv4
    /// first so that `localhost` means 127.0.0.1 wherever it can.
    pub fn resolve(&self) -> Result<Vec<SocketAddr>, String> {
        let mut addresses: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve the listen address {self}: {e}"))?
            .collect();
        addresses.sort_by_key(SocketAddr::is_ipv6);
        if addresses.is_empty() {
            return Err(format!("the listen address {self} resolves to no address"));
        }
        Ok(addresses)
    }
}

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid =
            |why: &str| format!("{text:?} is not HOST:PORT ({why}), e.g. 127.0.0.1:8080, localhost:0, [::1]:8080");
        let (host, port) = match text.strip_prefix('[') {
            Some(rest) => {
                let (host, rest) = rest.split_once(']').ok_or_else(|| invalid("no closing bracket"))?;
                (host, rest.strip_prefix(':').ok_or_else(|| invalid("no port"))?)
            }
            None => text.rsplit_once(':').ok_or_else(|| invalid("no port"))?,
        };
        if host.is_empty() || host.contains(['/', ' ']) || (host.contains(':') && !text.starts_with('[')) {
            return Err(invalid("write IPv6 addresses in brackets"));
        }
        let port = port.parse().map_err(|_| invalid("the port must be 0-65535"))?;
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for ListenAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}
