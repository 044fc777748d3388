//! Proxy mode: the gateway in front of the team's own services
//! (`PROXY_ROUTES`). A request under a configured prefix is authenticated
//! like `/v1/verify` (by the routes' fallback, through the one session
//! resolver), then forwarded from here with the caller's identity in the
//! `X-Wx-*` headers, without its token and without any `X-Wx-*` header the
//! client sent; bodies stream both ways, and the upstream's answer is
//! passed through as it is.
//!
//! This module owns the routes' configuration and the forwarding; it must
//! not authenticate anyone itself.

use std::{net::IpAddr, str::FromStr, time::Duration};

use axum::{
    body::Body,
    http::{HeaderMap, HeaderName, HeaderValue, Uri, header, request::Parts},
    response::Response,
};
use wxlogin_proto::reason::Reason;

use crate::error::ApiError;

/// One `prefix=url` of `PROXY_ROUTES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRoute {
    /// Starts and ends with `/`.
    pub prefix: String,
    /// `http(s)://host[:port]`, without a path: the request's own path and
    /// query follow it.
    pub upstream: String,
}

/// `PROXY_ROUTES`: comma-separated `prefix=url`, longest prefix first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyRoutes(Vec<ProxyRoute>);

impl FromStr for ProxyRoutes {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let mut routes = Vec::new();
        for entry in text
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
        {
            let (prefix, upstream) = entry
                .split_once('=')
                .ok_or_else(|| format!("{entry:?} is not prefix=url"))?;
            let prefix = prefix.trim();
            if !prefix.starts_with('/') || !prefix.ends_with('/') || prefix.len() < 2 {
                return Err(format!(
                    "the prefix {prefix:?} must start and end with / (e.g. /api/)"
                ));
            }
            if prefix.starts_with("/v1/") || prefix == "/healthz/" || prefix == "/readyz/" {
                return Err(format!("the prefix {prefix:?} is wxlogin's own"));
            }
            let upstream = upstream.trim().trim_end_matches('/');
            let uri: Uri = upstream
                .parse()
                .map_err(|_| format!("{upstream:?} is not a URL"))?;
            let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
            // No user:password@: the route is logged when its upstream fails.
            let userinfo = uri.authority().is_some_and(|a| a.as_str().contains('@'));
            if !scheme_ok || uri.host().is_none() || userinfo || !matches!(uri.path(), "" | "/") {
                return Err(format!(
                    "{upstream:?} must be http(s)://host[:port], without a path or credentials"
                ));
            }
            routes.push(ProxyRoute {
                prefix: prefix.to_owned(),
                upstream: upstream.to_owned(),
            });
        }
        routes.sort_by_key(|route| std::cmp::Reverse(route.prefix.len()));
        Ok(ProxyRoutes(routes))
    }
}

impl ProxyRoutes {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The route a path goes to, if any.
    pub fn route(&self, path: &str) -> Option<&ProxyRoute> {
        self.0.iter().find(|route| path.starts_with(&route.prefix))
    }
}

/// The proxy's HTTP client and its routes.
#[derive(Debug, Clone)]
pub struct Proxy {
    routes: ProxyRoutes,
    client: reqwest::Client,
}

impl Proxy {
    pub fn new(routes: ProxyRoutes, timeout: Duration) -> Result<Proxy, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()?;
        Ok(Proxy { routes, client })
    }

    pub fn route(&self, path: &str) -> Option<&ProxyRoute> {
        self.routes.route(path)
    }

    /// Forwards a request to `route`'s upstream as the caller `identity`
    /// names (the identity headers), from `client` (the client's address,
    /// when known). Its `X-Wx-*` headers and token stay behind.
    pub async fn forward(
        &self,
        route: &ProxyRoute,
        parts: Parts,
        body: Body,
        identity: HeaderMap,
        client: Option<IpAddr>,
    ) -> Result<Response, ApiError> {
        let path_and_query = parts.uri.path_and_query().map_or("/", |path| path.as_str());
        let url = format!("{}{path_and_query}", route.upstream);
        let mut headers = HeaderMap::with_capacity(parts.headers.len() + identity.len() + 1);
        for (name, value) in &parts.headers {
            if forwardable(name) {
                headers.append(name.clone(), value.clone());
            }
        }
        headers.extend(identity);
        if let Some(client) = client
            && let Ok(value) = HeaderValue::try_from(client.to_string())
        {
            headers.insert(HeaderName::from_static("x-forwarded-for"), value);
        }
        let upstream = self
            .client
            .request(parts.method, url)
            .headers(headers)
            .body(reqwest::Body::wrap_stream(body.into_data_stream()))
            .send()
            .await
            .map_err(|error| {
                let reason = if error.is_timeout() {
                    Reason::UpstreamTimeout
                } else {
                    Reason::UpstreamUnavailable
                };
                // Without the URL: its query string is the client's, and may
                // carry what must not reach a log.
                tracing::warn!(
                    upstream = %route.upstream,
                    error = %wxlogin_common::error_report(&error.without_url()),
                    "the proxied service did not answer"
                );
                ApiError::new(reason, "the service behind the gateway did not answer")
            })?;

        let mut response = Response::builder().status(upstream.status());
        if let Some(response_headers) = response.headers_mut() {
            for (name, value) in upstream.headers() {
                if !HOP_BY_HOP.contains(&name.as_str()) {
                    response_headers.append(name.clone(), value.clone());
                }
            }
        }
        response
            .body(Body::from_stream(upstream.bytes_stream()))
            .map_err(|_| ApiError::internal())
    }
}

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn forwardable(name: &HeaderName) -> bool {
    let name = name.as_str();
    !HOP_BY_HOP.contains(&name)
        && name != header::HOST.as_str()
        && name != header::AUTHORIZATION.as_str()
        && !name.starts_with("x-wx-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_and_the_longest_prefix_wins() {
        let routes: ProxyRoutes = "/api/=http://orders:8080, /api/pay/=https://pay.internal/"
            .parse()
            .unwrap();
        assert_eq!(
            routes.route("/api/pay/42").unwrap().upstream,
            "https://pay.internal"
        );
        assert_eq!(
            routes.route("/api/orders").unwrap().upstream,
            "http://orders:8080"
        );
        assert!(routes.route("/apix").is_none());
        assert!(routes.route("/v1/me").is_none());
        assert!("".parse::<ProxyRoutes>().unwrap().is_empty());
    }

    #[test]
    fn bad_routes_are_refused() {
        for bad in [
            "/api/",
            "api/=http://a",
            "/api=http://a",
            "/v1/=http://a",
            "/api/=ftp://a",
            "/api/=http://a/base",
            "/api/=not a url",
            "/api/=http://user:secret@orders:8080",
        ] {
            assert!(bad.parse::<ProxyRoutes>().is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_identity_and_hop_headers_are_not_forwarded() {
        for name in [
            "authorization",
            "host",
            "connection",
            "x-wx-openid",
            "x-wx-anything",
        ] {
            assert!(!forwardable(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["content-type", "x-request-id", "cookie", "x-custom"] {
            assert!(forwardable(&HeaderName::from_static(name)), "{name}");
        }
    }
}
