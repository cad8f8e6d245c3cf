//! Where webhooks may be delivered: the admin's allow-list (`webhooks.allowed_destinations`)
//! and the addresses refused unless it names them.
//!
//! - An empty list admits every address but link-local ones (169.254.0.0/16, fe80::/10)
//!   and cloud metadata ones (169.254.169.254, fd00:ec2::254, 100.100.100.200): loopback
//!   and private networks are admitted, since the city's orchestration layer usually sits
//!   on its private network and the demo posts to localhost.
//! - A non-empty list admits only the host names it lists (`orchestrator.comune.fi.it`,
//!   or `*.comune.fi.it` for the names under a domain) and the addresses inside the
//!   networks it lists (`10.20.0.0/16`, or one address).
//! - A link-local address is admitted only by a listed network inside the link-local
//!   range; a metadata address only by listing the address itself. A host name entry or a
//!   broad network (`0.0.0.0/0`) never admits them.
//!
//! Invariant: the dispatcher connects only to addresses [`DestinationPolicy::refusal`]
//! admits. The address is judged after the host name is resolved, at delivery time, and
//! the connection goes to the very addresses judged, so a name rebound to a refused
//! address is never connected to (DNS rebinding). Subscriptions are judged when created
//! too, where the answer is known then ([`DestinationPolicy::judge_host`], [`resolve`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

/// The configuration key of the allow-list, named in every refusal.
pub const KEY: &str = "webhooks.allowed_destinations";

const METADATA: [IpAddr; 3] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)),
    // Alibaba Cloud's metadata service.
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    /// A host name, lower case, without a trailing dot.
    Host(String),
    /// `*.example.org`: the names ending in `.example.org`.
    Suffix(String),
    Network(IpNet),
}

/// The admin's allow-list of webhook destinations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationPolicy {
    entries: Vec<Entry>,
}

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Metadata,
    LinkLocal,
    NotListed,
}

impl Refusal {
    fn why(self) -> &'static str {
        match self {
            Refusal::Metadata => "a cloud metadata address, refused unless listed itself",
            Refusal::LinkLocal => "link-local, refused unless a listed network inside 169.254.0.0/16 or fe80::/10 covers it",
            Refusal::NotListed => "not in the allowed destinations",
        }
    }
}

/// A destination the dispatcher will not connect to, or could not look up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("destination refused: {host} is not in {KEY}")]
    HostNotListed { host: String },
    #[error("destination refused: {addr} is {} ({KEY})", .refusal.why())]
    AddressRefused { addr: IpAddr, refusal: Refusal },
    #[error("destination refused: {host} resolves only to refused addresses: {} ({KEY})", list(.refused))]
    Refused { host: String, refused: Vec<(IpAddr, Refusal)> },
    #[error("cannot resolve {host}: {message}")]
    Resolve { host: String, message: String },
}

fn list(refused: &[(IpAddr, Refusal)]) -> String {
    refused.iter().map(|(a, r)| format!("{a} is {}", r.why())).collect::<Vec<_>>().join("; ")
}

/// What can be said of a URL's host before any lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostVerdict {
    Admitted,
    Refused(DestinationError),
    /// A host name whose addresses decide: resolve it.
    Resolve,
}

/// A bad allow-list entry: its index and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError {
    pub index: usize,
    pub message: String,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{KEY}[{}]: {}", self.index, self.message)
    }
}

impl DestinationPolicy {
    /// The allow-list from its entries: host names, `*.domain`, IP addresses, networks in
    /// CIDR form. Every bad entry is reported.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, Vec<EntryError>> {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for (index, e) in entries.iter().enumerate() {
            match parse_entry(e.as_ref()) {
                Ok(entry) => out.push(entry),
                Err(message) => errors.push(EntryError { index, message }),
            }
        }
        if errors.is_empty() {
            Ok(Self { entries: out })
        } else {
            Err(errors)
        }
    }

    /// Why `addr`, reached through the URL host `host`, is refused; `None` if admitted.
    pub fn refusal(&self, host: &str, addr: IpAddr) -> Option<Refusal> {
        let addr = canonical(addr);
        if METADATA.contains(&addr) {
            let listed =
                self.networks().any(|n| n.prefix_len() == n.max_prefix_len() && n.addr() == addr);
            return (!listed).then_some(Refusal::Metadata);
        }
        if let Some(range) = link_local_range(addr) {
            let listed = self.networks().any(|n| range.contains(n) && n.contains(&addr));
            return (!listed).then_some(Refusal::LinkLocal);
        }
        if self.entries.is_empty()
            || self.host_listed(host)
            || self.networks().any(|n| n.contains(&addr))
        {
            None
        } else {
            Some(Refusal::NotListed)
        }
    }

    /// The addresses of `host` that may be connected to, in their order; an error naming
    /// every refused one if none may.
    pub fn screen(
        &self,
        host: &str,
        addrs: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, DestinationError> {
        let mut refused = Vec::new();
        let mut admitted = Vec::with_capacity(addrs.len());
        for a in addrs {
            match self.refusal(host, a.ip()) {
                None => admitted.push(a),
                Some(r) => refused.push((a.ip(), r)),
            }
        }
        if admitted.is_empty() {
            if refused.is_empty() {
                return Err(DestinationError::Resolve {
                    host: host.to_owned(),
                    message: "no address".into(),
                });
            }
            return Err(DestinationError::Refused { host: host.to_owned(), refused });
        }
        Ok(admitted)
    }

    /// What can be said of a URL host (as in the URL; IPv6 in brackets) before a lookup.
    pub fn judge_host(&self, host: &str) -> HostVerdict {
        let bare = bare_host(host);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return match self.refusal(&bare, ip) {
                None => HostVerdict::Admitted,
                Some(refusal) => {
                    HostVerdict::Refused(DestinationError::AddressRefused { addr: ip, refusal })
                }
            };
        }
        if !self.entries.is_empty() && !self.host_listed(&bare) && self.networks().next().is_none()
        {
            return HostVerdict::Refused(DestinationError::HostNotListed { host: bare });
        }
        HostVerdict::Resolve
    }

    fn networks(&self) -> impl Iterator<Item = &IpNet> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Network(n) => Some(n),
            _ => None,
        })
    }

    fn host_listed(&self, host: &str) -> bool {
        let host = bare_host(host);
        self.entries.iter().any(|e| match e {
            Entry::Host(h) => *h == host,
            Entry::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
            Entry::Network(_) => false,
        })
    }
}

/// Look `host` up (port 0: the caller sets the port) and keep the addresses the policy
/// admits. The same function serves the dispatcher's connections and the API's check.
pub async fn resolve(
    policy: &DestinationPolicy,
    host: &str,
) -> Result<Vec<SocketAddr>, DestinationError> {
    let bare = bare_host(host);
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, 0)],
        Err(_) => tokio::net::lookup_host((bare.as_str(), 0))
            .await
            .map_err(|e| DestinationError::Resolve { host: bare.clone(), message: e.to_string() })?
            .collect(),
    };
    policy.screen(&bare, addrs)
}

/// [`resolve`] within `timeout`; `Ok(None)` when the lookup did not finish in time.
pub async fn resolve_within(
    policy: &DestinationPolicy,
    host: &str,
    timeout: Duration,
) -> Result<Option<Vec<SocketAddr>>, DestinationError> {
    match tokio::time::timeout(timeout, resolve(policy, host)).await {
        Ok(r) => r.map(Some),
        Err(_) => Ok(None),
    }
}

/// The host as compared and looked up: lower case, no brackets, no trailing dot.
fn bare_host(host: &str) -> String {
    let h = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase()
}

/// IPv4-mapped IPv6 addresses (`::ffff:169.254.169.254`) are the IPv4 address they carry.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

const LINK_LOCAL: [IpNet; 2] = [
    IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(169, 254, 0, 0)), 16),
    IpNet::new_assert(IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)), 10),
];

fn link_local_range(addr: IpAddr) -> Option<&'static IpNet> {
    LINK_LOCAL.iter().find(|r| r.contains(&addr))
}

fn parse_entry(raw: &str) -> Result<Entry, String> {
    let e = raw.trim();
    if e.is_empty() {
        return Err("an entry must not be empty".into());
    }
    if e.contains("://") || (e.contains(['/', ':']) && !looks_like_address(e)) {
        return Err(format!(
            "{raw:?} is not a host name, an IP address or a network like 10.0.0.0/8 (no scheme, port or path)"
        ));
    }
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Ok(Entry::Network(IpNet::from(canonical(ip))));
    }
    if e.contains('/') {
        let net: IpNet = e
            .parse()
            .map_err(|_| format!("{raw:?} is not a network in CIDR form like 10.0.0.0/8"))?;
        if net != net.trunc() {
            return Err(format!("{raw:?} has host bits set; the network is {}", net.trunc()));
        }
        return Ok(Entry::Network(net));
    }
    let (suffix, name) = match e.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, e),
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let valid = name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !valid {
        return Err(format!(
            "{raw:?} is not a host name (letters, digits, '-' and '.'; `*.` in front for a domain), an IP address or a network"
        ));
    }
    Ok(if suffix { Entry::Suffix(format!(".{name}")) } else { Entry::Host(name) })
}

fn looks_like_address(e: &str) -> bool {
    let addr = e.split('/').next().unwrap_or(e);
    addr.parse::<IpAddr>().is_ok() && e.matches('/').count() <= 1
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> DestinationPolicy {
        DestinationPolicy::parse(entries).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_empty_list_refuses_only_link_local_and_metadata_addresses() {
        let p = DestinationPolicy::default();
        for admitted in [
            "127.0.0.1",
            "::1",
            "10.1.2.3",
            "192.168.1.10",
            "172.16.0.1",
            "fd12::1",
            "93.184.216.34",
            "2001:db8::1",
        ] {
            assert_eq!(p.refusal("h", ip(admitted)), None, "{admitted}");
        }
        assert_eq!(p.refusal("h", ip("169.254.169.254")), Some(Refusal::Metadata));
        assert_eq!(p.refusal("h", ip("fd00:ec2::254")), Some(Refusal::Metadata));
        assert_eq!(p.refusal("h", ip("100.100.100.200")), Some(Refusal::Metadata));
        assert_eq!(p.refusal("h", ip("::ffff:169.254.169.254")), Some(Refusal::Metadata));
        assert_eq!(p.refusal("h", ip("169.254.1.1")), Some(Refusal::LinkLocal));
        assert_eq!(p.refusal("h", ip("fe80::1")), Some(Refusal::LinkLocal));
        assert_eq!(p.refusal("h", ip("febf::1")), Some(Refusal::LinkLocal));
        assert_eq!(p.refusal("h", ip("fec0::1")), None);
    }

    #[test]
    fn a_list_admits_only_its_hosts_and_networks() {
        let p =
            policy(&["orchestrator.comune.fi.it", "*.city.example", "10.20.0.0/16", "127.0.0.1"]);
        assert_eq!(p.refusal("orchestrator.comune.fi.it", ip("203.0.113.7")), None);
        assert_eq!(p.refusal("ORCHESTRATOR.comune.fi.it.", ip("203.0.113.7")), None);
        assert_eq!(p.refusal("a.b.city.example", ip("203.0.113.7")), None);
        assert_eq!(p.refusal("city.example", ip("203.0.113.7")), Some(Refusal::NotListed));
        assert_eq!(p.refusal("evilcity.example", ip("203.0.113.7")), Some(Refusal::NotListed));
        assert_eq!(p.refusal("other", ip("10.20.255.1")), None);
        assert_eq!(p.refusal("other", ip("10.21.0.1")), Some(Refusal::NotListed));
        assert_eq!(p.refusal("other", ip("127.0.0.1")), None);
        assert_eq!(p.refusal("other", ip("::ffff:127.0.0.1")), None);
        assert_eq!(p.refusal("other", ip("127.0.0.2")), Some(Refusal::NotListed));
        // A listed name never admits a metadata or link-local address.
        assert_eq!(
            p.refusal("orchestrator.comune.fi.it", ip("169.254.169.254")),
            Some(Refusal::Metadata)
        );
        assert_eq!(p.refusal("orchestrator.comune.fi.it", ip("fe80::2")), Some(Refusal::LinkLocal));
    }

    #[test]
    fn link_local_and_metadata_addresses_need_an_entry_of_their_own() {
        let broad = policy(&["0.0.0.0/0", "::/0"]);
        assert_eq!(broad.refusal("h", ip("8.8.8.8")), None);
        assert_eq!(broad.refusal("h", ip("169.254.169.254")), Some(Refusal::Metadata));
        assert_eq!(broad.refusal("h", ip("169.254.3.4")), Some(Refusal::LinkLocal));
        assert_eq!(broad.refusal("h", ip("fe80::1")), Some(Refusal::LinkLocal));
        let link = policy(&["169.254.3.0/24", "fe80::/10"]);
        assert_eq!(link.refusal("h", ip("169.254.3.4")), None);
        assert_eq!(link.refusal("h", ip("169.254.4.4")), Some(Refusal::LinkLocal));
        assert_eq!(link.refusal("h", ip("fe80::1")), None);
        assert_eq!(link.refusal("h", ip("169.254.169.254")), Some(Refusal::Metadata));
        let meta = policy(&["169.254.169.254", "fd00:ec2::254/128"]);
        assert_eq!(meta.refusal("h", ip("169.254.169.254")), None);
        assert_eq!(meta.refusal("h", ip("fd00:ec2::254")), None);
    }

    #[test]
    fn bad_entries_are_each_named() {
        let errors = DestinationPolicy::parse(&[
            "ok.example",
            "http://x",
            "10.0.0.1/8",
            "a b",
            "",
            "10.0.0.0/33",
            "host:8080",
        ])
        .unwrap_err();
        let indexes: Vec<usize> = errors.iter().map(|e| e.index).collect();
        assert_eq!(indexes, [1, 2, 3, 4, 5, 6]);
        assert_eq!(errors[1].to_string(), "webhooks.allowed_destinations[2]: \"10.0.0.1/8\" has host bits set; the network is 10.0.0.0/8");
    }

    #[test]
    fn hosts_are_judged_before_a_lookup_where_they_can_be() {
        let open = DestinationPolicy::default();
        assert_eq!(open.judge_host("127.0.0.1"), HostVerdict::Admitted);
        assert_eq!(open.judge_host("[::1]"), HostVerdict::Admitted);
        assert_eq!(open.judge_host("metadata.google.internal"), HostVerdict::Resolve);
        let HostVerdict::Refused(e) = open.judge_host("169.254.169.254") else { panic!() };
        assert_eq!(
            e.to_string(),
            "destination refused: 169.254.169.254 is a cloud metadata address, refused unless \
             listed itself (webhooks.allowed_destinations)"
        );
        assert!(matches!(open.judge_host("[fe80::1]"), HostVerdict::Refused(_)));
        let names = policy(&["hooks.example"]);
        assert_eq!(names.judge_host("hooks.example"), HostVerdict::Resolve);
        let HostVerdict::Refused(e) = names.judge_host("other.example") else { panic!() };
        assert_eq!(
            e.to_string(),
            "destination refused: other.example is not in webhooks.allowed_destinations"
        );
        let nets = policy(&["10.0.0.0/8"]);
        assert_eq!(nets.judge_host("other.example"), HostVerdict::Resolve);
        assert!(matches!(nets.judge_host("192.168.0.1"), HostVerdict::Refused(_)));
    }

    #[test]
    fn screening_keeps_the_admitted_addresses_or_names_every_refused_one() {
        let p = DestinationPolicy::default();
        let a = |s: &str| SocketAddr::new(ip(s), 0);
        assert_eq!(
            p.screen("h", vec![a("169.254.169.254"), a("10.0.0.1")]).unwrap(),
            vec![a("10.0.0.1")]
        );
        let e = p.screen("rebound.example", vec![a("169.254.169.254"), a("fe80::1")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "destination refused: rebound.example resolves only to refused addresses: \
             169.254.169.254 is a cloud metadata address, refused unless listed itself; \
             fe80::1 is link-local, refused unless a listed network inside 169.254.0.0/16 or fe80::/10 covers it \
             (webhooks.allowed_destinations)"
        );
    }

    proptest::proptest! {
        #[test]
        fn a_mapped_address_is_judged_as_the_ipv4_address_it_carries(
            addr in proptest::prelude::any::<u32>(),
            nets in proptest::collection::vec((proptest::prelude::any::<u32>(), 0u8..=32), 0..4),
        ) {
            let entries: Vec<String> = nets
                .iter()
                .map(|(a, len)| IpNet::new(IpAddr::V4(Ipv4Addr::from(*a)), *len).unwrap().trunc().to_string())
                .collect();
            let p = DestinationPolicy::parse(&entries).unwrap();
            let v4 = Ipv4Addr::from(addr);
            proptest::prop_assert_eq!(
                p.refusal("h", IpAddr::V4(v4)),
                p.refusal("h", IpAddr::V6(v4.to_ipv6_mapped()))
            );
            let open = DestinationPolicy::default().refusal("h", IpAddr::V4(v4));
            let special = v4.is_link_local() || v4 == Ipv4Addr::new(100, 100, 100, 200);
            proptest::prop_assert_eq!(open.is_some(), special);
        }
    }

    #[tokio::test]
    async fn localhost_is_resolved_and_screened() {
        let strict = policy(&["10.0.0.0/8"]);
        let e = resolve(&strict, "localhost").await.unwrap_err();
        assert!(
            matches!(e, DestinationError::Refused { ref host, .. } if host == "localhost"),
            "{e}"
        );
        let open = DestinationPolicy::default();
        let addrs = resolve(&open, "localhost").await.unwrap();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
