//! Where a pipeline may connect: the egress policy of `sluice serve` (README "Security model").
//!
//! Every destination a tenant names (the subscriber's analyzer, the topology analyzer, the S3
//! endpoint, the IAM endpoint) is checked twice: when the definition is accepted, and when a
//! connection is made, on each address the name resolves to (a name that resolves to a denied
//! address is denied: DNS can't be used to reach what a literal address could not).
//!
//! Always denied: link-local addresses (169.254.0.0/16, fe80::/10: cloud metadata services),
//! unspecified, multicast and broadcast addresses, and the server's own listen address. The
//! rest is decided by the operator's `egress.allow` / `egress.deny` lists of CIDRs: the longest
//! prefix that matches wins (a deny on a tie), and `egress.default` decides what matches
//! neither. `sluice run` uses [`EgressPolicy::unrestricted`]: its user owns the machine.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Why a destination is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    /// The address is not allowed.
    #[error("{addr} is not an allowed destination ({why})")]
    Denied {
        /// The address refused.
        addr: SocketAddr,
        /// Which rule refused it.
        why: &'static str,
    },
    /// The name did not resolve.
    #[error("cannot resolve {host}: {message}")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver's error.
        message: String,
    },
}

/// What a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Connections may be made.
    Allow,
    /// Connections are refused.
    Deny,
}

/// The policy. A cheap clone.
#[derive(Debug, Clone)]
pub struct EgressPolicy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `None`: every destination is allowed (`sluice run`).
    rules: Option<Rules>,
}

#[derive(Debug)]
struct Rules {
    /// Longest prefix first; deny before allow on the same prefix length.
    entries: Vec<(IpNet, Action)>,
    default: Action,
    /// The server's own listen addresses.
    own: Vec<SocketAddr>,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        Self::unrestricted()
    }
}

impl EgressPolicy {
    /// Every destination allowed (`sluice run`, tests of the stages).
    pub fn unrestricted() -> Self {
        EgressPolicy {
            inner: Arc::new(Inner { rules: None }),
        }
    }

    /// The policy of `sluice serve`: `allow` and `deny` lists, the action for what matches
    /// neither, and the server's own listen addresses (always denied).
    pub fn new(allow: &[IpNet], deny: &[IpNet], default: Action, own: Vec<SocketAddr>) -> Self {
        let mut entries: Vec<(IpNet, Action)> = deny
            .iter()
            .map(|n| (n.trunc(), Action::Deny))
            .chain(allow.iter().map(|n| (n.trunc(), Action::Allow)))
            .collect();
        // Longest prefix first; on a tie the deny (sorted first) wins.
        entries.sort_by_key(|(net, action)| {
            (
                std::cmp::Reverse(net.prefix_len()),
                *action == Action::Allow,
            )
        });
        EgressPolicy {
            inner: Arc::new(Inner {
                rules: Some(Rules {
                    entries,
                    default,
                    own,
                }),
            }),
        }
    }

    /// Whether any destination may be refused.
    pub fn is_restricted(&self) -> bool {
        self.inner.rules.is_some()
    }

    /// Checks one address.
    pub fn check(&self, addr: SocketAddr) -> Result<(), EgressError> {
        let Some(rules) = &self.inner.rules else {
            return Ok(());
        };
        let ip = canonical_ip(addr.ip());
        let denied = |why| Err(EgressError::Denied { addr, why });
        if always_denied(ip) {
            return denied(
                "link-local, unspecified, multicast and broadcast addresses are never allowed",
            );
        }
        if rules.own.iter().any(|own| is_own(*own, ip, addr.port())) {
            return denied("the server's own address");
        }
        let action = rules
            .entries
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map_or(rules.default, |(_, action)| *action);
        match action {
            Action::Allow => Ok(()),
            Action::Deny => denied("refused by the server's egress policy"),
        }
    }

    /// Resolves `host` (a name or a literal address) and keeps the allowed addresses; fails
    /// when none is allowed, naming the first refused one.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, EgressError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, port)],
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| EgressError::Resolve {
                    host: host.to_string(),
                    message: e.to_string(),
                })?
                .collect(),
        };
        self.keep_allowed(host, addrs)
    }

    fn keep_allowed(
        &self,
        host: &str,
        addrs: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, EgressError> {
        let mut first_error = None;
        let allowed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match self.check(*a) {
                Ok(()) => true,
                Err(e) => {
                    first_error.get_or_insert(e);
                    false
                }
            })
            .collect();
        match (allowed.is_empty(), first_error) {
            (false, _) => Ok(allowed),
            (true, Some(e)) => Err(e),
            (true, None) => Err(EgressError::Resolve {
                host: host.to_string(),
                message: "no address".into(),
            }),
        }
    }

    /// A resolver for an HTTP client that talks to `port` (the policy needs the port to know
    /// the server's own address; the clients set it after resolving).
    pub fn resolver(&self, port: u16) -> PolicyResolver {
        PolicyResolver {
            policy: self.clone(),
            port,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are their IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn always_denied(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_link_local() || v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()
        }
        IpAddr::V6(v6) => v6.is_unicast_link_local() || v6.is_unspecified() || v6.is_multicast(),
    }
}

/// Whether `ip:port` reaches the listener bound at `own`: the same port, and the listen
/// address itself or, for a wildcard listener, any address of this machine.
fn is_own(own: SocketAddr, ip: IpAddr, port: u16) -> bool {
    if own.port() != port {
        return false;
    }
    let own_ip = canonical_ip(own.ip());
    // A wildcard listener answers on every local address; an address is local when a socket
    // can be bound to it.
    own_ip == ip
        || (own_ip.is_unspecified()
            && (ip.is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()))
}

/// A DNS resolver that returns only the addresses the policy allows, for the HTTP clients
/// (reqwest for the analyzer's REST API and IBM IAM, the AWS SDK's for S3).
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: EgressPolicy,
    port: u16,
}

impl PolicyResolver {
    async fn lookup(&self, host: String) -> Result<Vec<SocketAddr>, EgressError> {
        self.policy.resolve(&host, self.port).await
    }
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = this
                .lookup(host)
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

impl aws_smithy_runtime_api::client::dns::ResolveDns for PolicyResolver {
    fn resolve_dns<'a>(
        &'a self,
        name: &'a str,
    ) -> aws_smithy_runtime_api::client::dns::DnsFuture<'a> {
        use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDnsError};
        DnsFuture::new(async move {
            self.lookup(name.to_string())
                .await
                .map(|addrs| addrs.into_iter().map(|a| a.ip()).collect())
                .map_err(ResolveDnsError::new)
        })
    }
}

/// Checks the destinations a definition names (`(key, url)`, from
/// `ExporterConfig::destinations`) by resolving their names now; returns `(key, why)` for each
/// name that resolves to a refused address.
pub async fn check_destinations(
    egress: &EgressPolicy,
    destinations: &[(String, String)],
) -> Vec<(String, String)> {
    const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
    let mut refused = Vec::new();
    if !egress.is_restricted() {
        return refused;
    }
    for (key, url) in destinations {
        let Ok(parsed) = url::Url::parse(url) else {
            continue; // the definition's own checks name it
        };
        let host = match parsed.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            _ => continue, // literal addresses are checked with the definition
        };
        let port = parsed.port_or_known_default().unwrap_or(80);
        // A name that doesn't resolve (yet) is accepted: it is checked again at each connect.
        if let Ok(Err(e @ EgressError::Denied { .. })) =
            tokio::time::timeout(RESOLVE_TIMEOUT, egress.resolve(&host, port)).await
        {
            refused.push((key.clone(), format!("{host} resolves to {e}")));
        }
    }
    refused
}

/// An HTTP client builder for one endpoint's `port`: names resolve through the policy, and
/// redirects are never followed (a redirect could point anywhere, the policy's checks aside).
pub fn http_client(egress: &EgressPolicy, port: u16) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(egress.resolver(port)))
}

/// An answer larger than the reader accepts.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// More bytes than allowed.
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    /// The transfer failed.
    #[error(transparent)]
    Transfer(#[from] reqwest::Error),
}

/// Reads an answer's body, failing as soon as it passes `max` bytes.
pub async fn read_body(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > max {
            return Err(BodyError::TooLarge(max));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A URL as written, with its credentials hidden: for logs and error messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// The address `sluice serve` uses for "localhost" in canonical forms (lease keys).
pub const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn link_local_unspecified_multicast_and_own_address_are_always_denied() {
        let own = addr("127.0.0.1:8080");
        let p = EgressPolicy::new(
            &[net("0.0.0.0/0"), net("::/0")],
            &[],
            Action::Allow,
            vec![own],
        );
        for denied in [
            "169.254.169.254:80",
            "[fe80::1]:80",
            "0.0.0.0:80",
            "[::]:80",
            "224.0.0.1:80",
            "255.255.255.255:80",
            "127.0.0.1:8080",
            "[::ffff:169.254.169.254]:80",
            "[::ffff:127.0.0.1]:8080",
        ] {
            assert!(p.check(addr(denied)).is_err(), "{denied}");
        }
        assert!(p.check(addr("127.0.0.1:8082")).is_ok());
        assert!(p.check(addr("10.1.2.3:80")).is_ok());
    }

    #[test]
    fn a_wildcard_listener_is_reached_through_any_local_address() {
        let p = EgressPolicy::new(&[], &[], Action::Allow, vec![addr("0.0.0.0:9000")]);
        assert!(p.check(addr("127.0.0.1:9000")).is_err());
        assert!(p.check(addr("127.0.0.2:9000")).is_err());
        assert!(p.check(addr("127.0.0.1:9001")).is_ok());
        // TEST-NET-3 is nobody's address.
        assert!(p.check(addr("203.0.113.7:9000")).is_ok());
    }

    #[test]
    fn the_longest_matching_prefix_decides_and_deny_wins_a_tie() {
        let p = EgressPolicy::new(
            &[net("10.1.0.0/16"), net("192.168.0.0/16")],
            &[net("10.0.0.0/8"), net("192.168.0.0/16")],
            Action::Allow,
            vec![],
        );
        assert!(p.check(addr("10.2.0.1:80")).is_err());
        assert!(p.check(addr("10.1.0.1:80")).is_ok());
        assert!(p.check(addr("192.168.1.1:80")).is_err());
        assert!(p.check(addr("8.8.8.8:53")).is_ok());
        let closed = EgressPolicy::new(&[net("10.1.0.0/16")], &[], Action::Deny, vec![]);
        assert!(closed.check(addr("8.8.8.8:53")).is_err());
        assert!(closed.check(addr("10.1.2.3:80")).is_ok());
        assert!(
            EgressPolicy::unrestricted()
                .check(addr("169.254.169.254:80"))
                .is_ok()
        );
    }

    #[tokio::test]
    async fn names_are_checked_on_every_address_they_resolve_to() {
        let p = EgressPolicy::new(
            &[],
            &[net("127.0.0.0/8"), net("::1/128")],
            Action::Allow,
            vec![],
        );
        let e = p.resolve("localhost", 80).await.unwrap_err();
        assert!(matches!(e, EgressError::Denied { .. }), "{e}");
        assert!(p.resolve("[::1]", 80).await.is_err());
        let open = EgressPolicy::new(&[], &[], Action::Allow, vec![]);
        assert!(!open.resolve("localhost", 80).await.unwrap().is_empty());
    }

    #[test]
    fn credentials_are_hidden_in_urls() {
        assert_eq!(
            redact_url("ws://user:pw@host:1/ws/subscriber/flow"),
            "ws://host:1/ws/subscriber/flow"
        );
        assert_eq!(redact_url("ws://host/x"), "ws://host/x");
    }
}
