//! Which names the dashboard answers to, and where a request comes from.
//!
//! **DNS rebinding.** A page on `http://evil.example:8000/` can make its
//! name resolve to `127.0.0.1`; the browser then sends that page's
//! requests to a dashboard listening on loopback, and lets the page read
//! the answers, since to the browser they are the page's own origin. Only
//! the `Host` header tells: it still says `evil.example`. So every request
//! must name an allowed host: `localhost`, which no other site can
//! answer for; any IP address, since a page whose origin is an IP address
//! and port was served from that address and port (by this server), not
//! by a rebound name; and the names the app adds with
//! [`Dashboard::allowed_hosts`](super::Dashboard::allowed_hosts).
//!
//! **Proxies.** `Forwarded` and `X-Forwarded-Host` / `X-Forwarded-Proto`
//! are believed only from a peer listed with
//! [`Dashboard::trusted_proxies`](super::Dashboard::trusted_proxies): from
//! anyone else they are ignored, since a rebinding page can set them too.
//!
//! **Origin.** A write whose `Origin` header is not exactly this request's
//! scheme, host and port (default ports made explicit) is refused.

use std::net::IpAddr;

use actix_web::HttpRequest;
use actix_web::http::header;

use super::WebError;

/// An entry of [`HostPolicy::allowed`] that allows every name.
pub(crate) const ANY_HOST: &str = "*";

/// Which `Host` names are answered, and whose forwarded headers count.
#[derive(Clone, Debug, Default)]
pub(crate) struct HostPolicy {
    /// Normalized names ([`normalize_host`]) besides the loopback ones;
    /// [`ANY_HOST`] allows every name.
    pub(crate) allowed: Vec<String>,
    /// Peers whose `Forwarded` / `X-Forwarded-*` headers are believed.
    pub(crate) trusted_proxies: Vec<IpAddr>,
}

/// Where a request says it was sent: `scheme://host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Authority {
    /// `http` or `https`, lowercase.
    pub(crate) scheme: String,
    /// The name, normalized by [`normalize_host`].
    pub(crate) host: String,
    /// The port, explicit (80 or 443 when the request named none).
    pub(crate) port: u16,
}

impl HostPolicy {
    /// The host and scheme `req` was sent to: its own `Host` header (or
    /// the request target's authority, or the server's configured name),
    /// and the forwarded ones when the peer is a trusted proxy.
    pub(crate) fn authority(&self, req: &HttpRequest) -> Result<Authority, WebError> {
        let trusted = req
            .peer_addr()
            .is_some_and(|peer| self.trusted_proxies.contains(&peer.ip()));
        let (forwarded_host, forwarded_proto) = if trusted {
            forwarded(req)
        } else {
            (None, None)
        };
        let config = req.app_config();
        let scheme = forwarded_proto
            .or_else(|| req.uri().scheme_str().map(str::to_owned))
            .unwrap_or_else(|| if config.secure() { "https" } else { "http" }.to_owned())
            .to_ascii_lowercase();
        let raw_host = match forwarded_host {
            Some(host) => host,
            None => match req.headers().get(header::HOST) {
                Some(value) => value
                    .to_str()
                    .map(str::to_owned)
                    .map_err(|_| WebError::bad_request("the Host header is not readable text"))?,
                None => req
                    .uri()
                    .authority()
                    .map_or_else(|| config.host().to_owned(), |a| a.as_str().to_owned()),
            },
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        let (host, port) = split_host_port(&raw_host)
            .map(|(host, port)| (host, port.unwrap_or(default_port)))
            .ok_or_else(|| {
                WebError::bad_request(format!("the Host header {raw_host:?} is not a host name"))
            })?;
        Ok(Authority { scheme, host, port })
    }

    /// Refuses a request sent to a name this dashboard does not answer to
    /// (see the module docs); answers where it was sent.
    pub(crate) fn check(&self, req: &HttpRequest) -> Result<Authority, WebError> {
        let authority = self.authority(req)?;
        if self.allows(&authority.host) {
            return Ok(authority);
        }
        Err(WebError::forbidden(format!(
            "this dashboard does not answer to the host name {:?} (a page on another site may \
             be trying to reach it through DNS rebinding). If that is this dashboard's own name, \
             allow it: Dashboard::allowed_hosts in the app, or --allowed-host / \
             BGTASKS_DASHBOARD_ALLOWED_HOSTS for bgtasks dashboard",
            authority.host
        )))
    }

    /// Whether `host` (normalized) is always allowed or an allowed name.
    pub(crate) fn allows(&self, host: &str) -> bool {
        always_allowed(host)
            || self
                .allowed
                .iter()
                .any(|allowed| allowed == ANY_HOST || allowed == host)
    }

    /// Refuses a request whose `Origin` is not exactly where it was sent
    /// (scheme, host and port). No `Origin` header passes: browsers send
    /// one with every cross-site write, and other clients are not
    /// browsers a page could drive.
    pub(crate) fn check_origin(&self, req: &HttpRequest) -> Result<(), WebError> {
        let Some(origin) = req.headers().get(header::ORIGIN) else {
            return Ok(());
        };
        let here = self.check(req)?;
        let origin = origin.to_str().unwrap_or_default();
        let same = parse_origin(origin).is_some_and(|there| there == here);
        if same {
            Ok(())
        } else {
            Err(WebError::forbidden(format!(
                "refused a request from another site (Origin {origin:?}, this is {}://{}:{})",
                here.scheme,
                bracketed(&here.host),
                here.port
            )))
        }
    }
}

/// The first `Forwarded` `host=` / `proto=`, else `X-Forwarded-Host` /
/// `X-Forwarded-Proto` (first value of each).
fn forwarded(req: &HttpRequest) -> (Option<String>, Option<String>) {
    let mut host = None;
    let mut proto = None;
    for value in req
        .headers()
        .get_all(header::FORWARDED)
        .filter_map(|v| v.to_str().ok())
    {
        for pair in value.split([';', ',']) {
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"').to_owned();
            match name.trim().to_ascii_lowercase().as_str() {
                "host" if host.is_none() => host = Some(value),
                "proto" if proto.is_none() => proto = Some(value),
                _ => {}
            }
        }
    }
    let first = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    (
        host.or_else(|| first("x-forwarded-host")),
        proto.or_else(|| first("x-forwarded-proto")),
    )
}

/// `host[:port]` (IPv6 in brackets) as a normalized name and the port.
fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    let text = text.trim();
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (ip, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            after => Some(after.strip_prefix(':')?),
        };
        (ip, port)
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let port = match port {
        Some(port) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            Some(port.parse().ok()?)
        }
        Some(_) => return None,
        None => None,
    };
    Some((normalize_host(host)?, port))
}

/// A host name as compared: lowercase, without brackets or a final dot.
/// `None` when it is empty or holds what no host name holds.
pub(crate) fn normalize_host(name: &str) -> Option<String> {
    let name = name.trim();
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b));
    ok.then_some(name)
}

/// An entry of an allow-list: `*`, or a host name or IP address (IPv6
/// with or without brackets); a port, if given, is dropped (every port
/// of an allowed name is allowed). `None` when it is none of these.
pub(crate) fn allowed_entry(entry: &str) -> Option<String> {
    let entry = entry.trim();
    if entry == ANY_HOST {
        return Some(ANY_HOST.to_owned());
    }
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return normalize_host(&ip.to_string());
    }
    split_host_port(entry).map(|(host, _)| host)
}

/// `localhost` or an IP address: names no rebinding can hide behind.
fn always_allowed(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok()
}

/// An IPv6 address in brackets, as in a URL.
fn bracketed(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// An `Origin` header (`scheme://host[:port]`) as an [`Authority`].
fn parse_origin(origin: &str) -> Option<Authority> {
    let (scheme, rest) = origin.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    if rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    let (host, port) = split_host_port(rest)?;
    Some(Authority {
        scheme,
        host,
        port: port.unwrap_or(default_port),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_split_and_normalize() {
        assert_eq!(
            split_host_port("LocalHost:8000"),
            Some(("localhost".into(), Some(8000)))
        );
        assert_eq!(split_host_port("[::1]:80"), Some(("::1".into(), Some(80))));
        assert_eq!(
            split_host_port("example.com."),
            Some(("example.com".into(), None))
        );
        for bad in ["", ":80", "a:b", "a:99999", "[::1", "a b", "a/b", "[::1]x"] {
            assert_eq!(split_host_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn localhost_and_addresses_are_allowed_and_other_names_are_not() {
        let policy = HostPolicy::default();
        for host in [
            "localhost",
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "10.0.0.1",
            "fe80::1",
        ] {
            assert!(policy.allows(host), "{host}");
        }
        for host in [
            "evil.example",
            "localhost.evil.example",
            "a.localhost",
            "1.2.3.4.nip.io",
        ] {
            assert!(!policy.allows(host), "{host}");
        }
        let policy = HostPolicy {
            allowed: vec!["dash.example.com".into()],
            ..HostPolicy::default()
        };
        assert!(policy.allows("dash.example.com"));
        assert!(!policy.allows("example.com"));
    }

    #[test]
    fn allow_list_entries_are_names_without_ports() {
        assert_eq!(
            allowed_entry(" Dash.Example.com "),
            Some("dash.example.com".into())
        );
        assert_eq!(
            allowed_entry("example.com:8000"),
            Some("example.com".into())
        );
        assert_eq!(allowed_entry("[::1]"), Some("::1".into()));
        assert_eq!(allowed_entry("::1"), Some("::1".into()));
        assert_eq!(allowed_entry("*"), Some("*".into()));
        for bad in ["", "a b", "http://x", "a:b"] {
            assert_eq!(allowed_entry(bad), None, "{bad}");
        }
    }

    #[test]
    fn origins_carry_scheme_host_and_port() {
        let here = |scheme: &str, host: &str, port| Authority {
            scheme: scheme.into(),
            host: host.into(),
            port,
        };
        assert_eq!(
            parse_origin("http://localhost"),
            Some(here("http", "localhost", 80))
        );
        assert_eq!(
            parse_origin("HTTPS://[::1]:8443"),
            Some(here("https", "::1", 8443))
        );
        for bad in ["null", "localhost:80", "ftp://x", "http://x/", "http://u@x"] {
            assert_eq!(parse_origin(bad), None, "{bad}");
        }
    }
}
