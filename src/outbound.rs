//! Outbound HTTP to URLs a tenant names (identity providers' keys, git
//! providers' APIs), safe to point at by a tenant.
//!
//! A tenant names the URL, so a request must not become a way into the
//! relay's own network (SSRF). Every request:
//! - is https, unless the operator allowed plain http (local tests);
//! - connects only to public addresses: loopback, private, link-local,
//!   shared, multicast and reserved ones are refused after DNS resolution
//!   (and for address literals), unless the operator allowed their network;
//! - follows at most 3 redirects, and only on the same host;
//! - ignores proxy settings, so the address checked is the address connected;
//! - takes at most a set time (`TIMEOUT` for key fetches) and reads at most
//!   a set number of bytes (`MAX_BODY` for key fetches).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::Url;

/// The whole fetch, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Discovery documents and key sets are a few KB; GitHub's JWKS is under 4 KB.
pub const MAX_BODY: usize = 256 * 1024;
const MAX_REDIRECTS: usize = 3;

/// What the operator allows beyond public https hosts
/// (`HOOKRELAY_OUTBOUND_ALLOW_HTTP`, `HOOKRELAY_OUTBOUND_ALLOW_NETWORKS`).
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    /// Plain http URLs (local tests only).
    pub allow_http: bool,
    /// Networks that may be reached even though they are not public.
    pub allowed_networks: Vec<ipnet::IpNet>,
}

impl OutboundPolicy {
    /// Whether a connection to `ip` is allowed.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.allowed_networks.iter().any(|net| net.contains(&ip)) || is_public(ip)
    }
}

/// Whether `ip` is a globally routed unicast address: none of IANA's IPv4
/// and IPv6 special-purpose registries' blocks, nor multicast or reserved
/// space. An IPv6 address that carries an IPv4 one (mapped, NAT64's
/// well-known prefix, 6to4) is judged by the IPv4 address it reaches; the
/// other forms, Teredo included, are refused whole.
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                // "This network", RFC 791; reserved, RFC 1112.
                || a == 0
                || a >= 240
                // Shared address space (carrier-grade NAT), RFC 6598.
                || (a == 100 && (64..128).contains(&b))
                // IETF protocol assignments, RFC 6890.
                || (a == 192 && b == 0 && c == 0)
                // AS112-v4 (RFC 7535), AMT (RFC 7450), 6to4 relay anycast
                // (RFC 7526), AS112 direct delegation (RFC 7534).
                || (a == 192 && b == 31 && c == 196)
                || (a == 192 && b == 52 && c == 193)
                || (a == 192 && b == 88 && c == 99)
                || (a == 192 && b == 175 && c == 48)
                // Benchmarking, RFC 2544.
                || (a == 198 && (18..20).contains(&b)))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = |high: u16, low: u16| {
                is_public(IpAddr::V4(std::net::Ipv4Addr::from(
                    (u32::from(high) << 16) | u32::from(low),
                )))
            };
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            // NAT64's well-known prefix 64:ff9b::/96 (RFC 6052).
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                return embedded(s[6], s[7]);
            }
            // 6to4, 2002::/16 (RFC 3056): the IPv4 address follows the prefix.
            if s[0] == 0x2002 {
                return embedded(s[1], s[2]);
            }
            // Only 2000::/3 is global unicast; this refuses ::/8 (compatible
            // forms), 64:ff9b:1::/48, 100::/64, fc00::/7, fe80::/10, fec0::/10,
            // ff00::/8 and 5f00::/16 among the rest.
            if s[0] & 0xe000 != 0x2000 {
                return false;
            }
            !(
                // IETF protocol assignments 2001::/23: Teredo, benchmarking,
                // AMT, AS112, ORCHID and the rest (RFC 2928).
                (s[0] == 0x2001 && (s[1] < 0x0200
                    // Documentation, RFC 3849 and RFC 9637.
                    || s[1] == 0x0db8))
                || (s[0] == 0x3fff && s[1] < 0x1000)
                // AS112 direct delegation, RFC 7534.
                || (s[0] == 0x2620 && s[1] == 0x004f && s[2] & 0xff00 == 0x8000)
            )
        }
    }
}

/// Resolves names, then drops every address the policy refuses.
struct CheckedResolver(Arc<OutboundPolicy>);

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| policy.allows(addr.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(Violation(format!(
                    "{host} resolves to no address hookrelay may connect to (private, loopback \
                     and link-local addresses are refused)"
                ))) as _);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The resolver or the redirect policy refused: found in a reqwest error's
/// causes, it makes the fetch `Refused`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Violation(String);

/// Why a fetch failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// The URL or what it led to breaks the rules: asking again will not help.
    #[error("{0}")]
    Refused(String),
    /// Unreachable, slow, or answering with an error: may heal.
    #[error("{0}")]
    Unavailable(String),
}

/// An answer read in full: any status, the headers, the bounded body.
#[derive(Debug)]
pub struct Answer {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

/// A shared HTTP client that sends requests under the policy.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    policy: Arc<OutboundPolicy>,
}

impl Fetcher {
    pub fn new(policy: OutboundPolicy) -> anyhow::Result<Self> {
        let policy = Arc::new(policy);
        let allow_http = policy.allow_http;
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            let first = attempt.previous().first().and_then(|u| u.host_str());
            let violation = if attempt.previous().len() > MAX_REDIRECTS {
                Some("too many redirects")
            } else if first.is_some() && first != attempt.url().host_str() {
                Some("redirected to another host")
            } else if attempt.url().scheme() != "https" && !allow_http {
                Some("redirected to a URL that is not https")
            } else {
                None
            };
            match violation {
                Some(why) => attempt.error(Violation(why.to_owned())),
                None => attempt.follow(),
            }
        });
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(CheckedResolver(policy.clone())))
            .no_proxy()
            .https_only(!policy.allow_http)
            .redirect(redirect)
            .connect_timeout(Duration::from_secs(3))
            .user_agent(concat!("hookrelay/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, policy })
    }

    pub fn policy(&self) -> &OutboundPolicy {
        &self.policy
    }

    /// A request to `url`, once the URL passes the policy; send it with `send`.
    pub fn request(
        &self,
        method: reqwest::Method,
        url: &Url,
    ) -> Result<reqwest::RequestBuilder, FetchError> {
        self.check_url(url)?;
        Ok(self.client.request(method, url.clone()))
    }

    /// Sends `request` (made by `request` for `url`) and reads at most
    /// `max_body` bytes of the answer, whatever its status, within `timeout`.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &Url,
        max_body: usize,
        timeout: Duration,
    ) -> Result<Answer, FetchError> {
        let read = async {
            let mut response = request.send().await.map_err(|e| describe(url, &e))?;
            let too_large =
                || FetchError::Refused(format!("{url} is larger than {max_body} bytes"));
            if response
                .content_length()
                .is_some_and(|length| length > max_body as u64)
            {
                return Err(too_large());
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(|e| describe(url, &e))? {
                if body.len() + chunk.len() > max_body {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Answer {
                status: response.status(),
                headers: response.headers().clone(),
                body,
            })
        };
        tokio::time::timeout(timeout, read)
            .await
            .unwrap_or_else(|_| {
                Err(FetchError::Unavailable(format!(
                    "{url}: timed out after {timeout:?}"
                )))
            })
    }

    /// GETs `url` and parses its JSON body.
    pub async fn json<T: serde::de::DeserializeOwned>(&self, url: &Url) -> Result<T, FetchError> {
        let request = self
            .request(reqwest::Method::GET, url)?
            .header(reqwest::header::ACCEPT, "application/json");
        let answer = self.send(request, url, MAX_BODY, TIMEOUT).await?;
        let status = answer.status;
        if !status.is_success() {
            let error = format!("{url} answered {status}");
            return Err(if status.is_server_error() || status.as_u16() == 429 {
                FetchError::Unavailable(error)
            } else {
                FetchError::Refused(error)
            });
        }
        serde_json::from_slice(&answer.body)
            .map_err(|e| FetchError::Refused(format!("{url} is not the expected JSON: {e}")))
    }

    /// The scheme and, for address literals (which skip the resolver), the address.
    fn check_url(&self, url: &Url) -> Result<(), FetchError> {
        match url.scheme() {
            "https" => {}
            "http" if self.policy.allow_http => {}
            _ => {
                return Err(FetchError::Refused(format!("{url} is not an https URL")));
            }
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(FetchError::Refused(format!("{url} has no host"))),
        };
        if let Some(ip) = literal
            && !self.policy.allows(ip)
        {
            return Err(FetchError::Refused(format!(
                "{url}: hookrelay may not connect to {ip} (private, loopback and link-local \
                 addresses are refused)"
            )));
        }
        Ok(())
    }
}

/// A reqwest error as one line; a refusal by the resolver or the redirect
/// policy is `Refused`.
fn describe(url: &Url, error: &reqwest::Error) -> FetchError {
    let mut refused = false;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = cause {
        refused |= error.is::<Violation>();
        cause = error.source();
    }
    let text = format!("{url}: {}", hookrelay_telemetry::error_chain(error));
    if refused {
        FetchError::Refused(text)
    } else {
        FetchError::Unavailable(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_are_allowed_by_default() {
        let policy = OutboundPolicy::default();
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::808:808",
            // 6to4 of 127.0.0.1, of 10.0.0.1; Teredo; site-local; discard-only.
            "2002:7f00:1::",
            "2002:a00:1::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "fec0::1",
            "100::1",
            "::127.0.0.1",
            "192.88.99.1",
            "192.31.196.1",
            "198.18.0.1",
            "203.0.113.9",
            "2001:db8::1",
            "3fff::1",
            "2001:2::1",
            "2620:4f:8000::1",
            "5f00::1",
            "ff02::1",
        ] {
            assert!(!policy.allows(private.parse().unwrap()), "{private}");
        }
        for public in [
            "140.82.112.3",
            "8.8.8.8",
            "2606:50c0:8000::153",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(policy.allows(public.parse().unwrap()), "{public}");
        }
        let loopback_allowed = OutboundPolicy {
            allow_http: true,
            allowed_networks: vec!["127.0.0.0/8".parse().unwrap()],
        };
        assert!(loopback_allowed.allows("127.0.0.1".parse().unwrap()));
        assert!(!loopback_allowed.allows("10.0.0.1".parse().unwrap()));
    }

    #[tokio::test]
    async fn address_literals_and_plain_http_are_refused_before_connecting() {
        let fetcher = Fetcher::new(OutboundPolicy::default()).unwrap();
        for url in [
            "https://127.0.0.1:1/jwks",
            "https://[::1]:1/jwks",
            "https://169.254.169.254/latest",
            "http://example.com/jwks",
            "file:///etc/passwd",
        ] {
            let result = fetcher
                .json::<serde_json::Value>(&Url::parse(url).unwrap())
                .await;
            assert!(matches!(result, Err(FetchError::Refused(_))), "{url}");
        }
        // A name that resolves to loopback only is refused by the resolver.
        let result = fetcher
            .json::<serde_json::Value>(&Url::parse("https://localhost:1/jwks").unwrap())
            .await;
        assert!(
            matches!(&result, Err(FetchError::Refused(why)) if why.contains("resolves to no address")),
            "{result:?}"
        );
    }

    /// A local server: `/doc` answers JSON, `/same` redirects to `/doc` on the
    /// same host, `/elsewhere` to another host (`localhost` for 127.0.0.1),
    /// `/big` sends more than MAX_BODY, `/broken` answers 503, `/slow` answers
    /// after 30 s.
    async fn server() -> String {
        use axum::response::{IntoResponse, Redirect};
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app =
            axum::Router::new()
                .route(
                    "/doc",
                    get(|| async { axum::Json(serde_json::json!({"ok": true})) }),
                )
                .route("/same", get(|| async { Redirect::temporary("/doc") }))
                .route(
                    "/elsewhere",
                    get(move || async move {
                        Redirect::temporary(&format!("http://localhost:{port}/doc"))
                    }),
                )
                .route("/big", get(|| async { "x".repeat(MAX_BODY + 1) }))
                .route(
                    "/slow",
                    get(|| async {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        axum::Json(serde_json::json!({}))
                    }),
                )
                .route(
                    "/broken",
                    get(|| async { axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response() }),
                );
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://127.0.0.1:{port}")
    }

    #[tokio::test]
    async fn redirects_stay_on_the_host_and_bodies_are_bounded() {
        let base = server().await;
        let fetcher = Fetcher::new(OutboundPolicy {
            allow_http: true,
            allowed_networks: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        })
        .unwrap();
        let get = |path: &str| {
            let url = Url::parse(&format!("{base}{path}")).unwrap();
            let fetcher = fetcher.clone();
            async move { fetcher.json::<serde_json::Value>(&url).await }
        };
        assert_eq!(get("/doc").await.unwrap()["ok"], true);
        assert_eq!(get("/same").await.unwrap()["ok"], true);
        let elsewhere = get("/elsewhere").await;
        assert!(
            matches!(&elsewhere, Err(FetchError::Refused(why)) if why.contains("another host")),
            "{elsewhere:?}"
        );
        let big = get("/big").await;
        assert!(
            matches!(&big, Err(FetchError::Refused(why)) if why.contains("larger than")),
            "{big:?}"
        );
        assert!(matches!(
            get("/broken").await,
            Err(FetchError::Unavailable(_))
        ));
        assert!(matches!(get("/missing").await, Err(FetchError::Refused(_))));
        // A server that keeps the fetch waiting is given up on after TIMEOUT.
        let slow = get("/slow").await;
        assert!(
            matches!(&slow, Err(FetchError::Unavailable(why)) if why.contains("timed out")),
            "{slow:?}"
        );
    }
}

/// The classifier never calls a special-purpose address public: random
/// addresses inside each block of IANA's IPv4 and IPv6 special-purpose
/// registries, and those IPv4 blocks carried in IPv6 (mapped, compatible,
/// NAT64's well-known prefix, 6to4) or under Teredo.
#[cfg(test)]
mod properties {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    /// IANA IPv4 special-purpose blocks that are not globally reachable, plus
    /// multicast and reserved space.
    const V4: &[(u32, u8)] = &[
        (0x0000_0000, 8),  // this network
        (0x0a00_0000, 8),  // private
        (0x6440_0000, 10), // shared address space
        (0x7f00_0000, 8),  // loopback
        (0xa9fe_0000, 16), // link-local
        (0xac10_0000, 12), // private
        (0xc000_0000, 24), // IETF protocol assignments
        (0xc000_0200, 24), // documentation TEST-NET-1
        (0xc01f_c400, 24), // AS112-v4
        (0xc034_c100, 24), // AMT
        (0xc058_6300, 24), // 6to4 relay anycast (deprecated)
        (0xc0a8_0000, 16), // private
        (0xc0af_3000, 24), // direct delegation AS112
        (0xc612_0000, 15), // benchmarking
        (0xc633_6400, 24), // TEST-NET-2
        (0xcb00_7100, 24), // TEST-NET-3
        (0xe000_0000, 4),  // multicast
        (0xf000_0000, 4),  // reserved, broadcast
    ];

    /// IANA IPv6 special-purpose blocks that are not globally reachable, and
    /// what is outside global unicast.
    const V6: &[(u128, u8)] = &[
        (0, 8),                       // ::/8: unspecified, loopback, compatible
        (0x0064_ff9b_0001 << 80, 48), // local-use IPv4/IPv6 translation
        (0x0100 << 112, 64),          // discard-only
        (0x2001_0000 << 96, 23),      // IETF protocol assignments (Teredo among them)
        (0x2001_0db8 << 96, 32),      // documentation
        (0x3fff << 112, 20),          // documentation
        (0x5f00 << 112, 16),          // segment routing SIDs
        (0xfc00 << 112, 7),           // unique local
        (0xfe80 << 112, 10),          // link-local
        (0xff00 << 112, 8),           // multicast
    ];

    fn inside_v4(base: u32, prefix: u8, bits: u32) -> Ipv4Addr {
        let host = if prefix == 0 {
            bits
        } else {
            bits & (u32::MAX >> prefix)
        };
        Ipv4Addr::from(base | host)
    }

    proptest! {
        #[test]
        fn no_special_purpose_ipv4_address_is_public(block in 0..V4.len(), bits: u32) {
            let (base, prefix) = V4[block];
            let v4 = inside_v4(base, prefix, bits);
            let policy = OutboundPolicy::default();
            let v4_bits = u32::from(v4);
            let forms = [
                IpAddr::V4(v4),
                IpAddr::V6(v4.to_ipv6_mapped()),
                IpAddr::V6(v4.to_ipv6_compatible()),
                IpAddr::V6(Ipv6Addr::from((0x0064_ff9b_u128 << 96) | u128::from(v4_bits))),
                IpAddr::V6(Ipv6Addr::from((0x2002_u128 << 112) | (u128::from(v4_bits) << 80) | 1)),
                // Teredo: the client's address, obfuscated, in the last 32 bits.
                IpAddr::V6(Ipv6Addr::from((0x2001_0000_u128 << 96) | u128::from(!v4_bits))),
            ];
            for ip in forms {
                prop_assert!(!policy.allows(ip), "{} (from {}/{}) is called public", ip, Ipv4Addr::from(base), prefix);
            }
        }

        #[test]
        fn no_special_purpose_ipv6_address_is_public(block in 0..V6.len(), bits: u128) {
            let (base, prefix) = V6[block];
            let ip = Ipv6Addr::from(base | (bits & (u128::MAX >> prefix)));
            // A mapped or NAT64 address is judged by the IPv4 address it carries.
            prop_assume!(ip.to_ipv4_mapped().is_none());
            prop_assert!(!OutboundPolicy::default().allows(IpAddr::V6(ip)), "{} is called public", ip);
        }
    }
}
