//! Extractors that turn axum's rejections into `ApiError`, and the client
//! address used by login throttling.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::error::ApiError;
use crate::state::AppState;

/// `axum::Json` whose rejections share the API's error shape, and which
/// refuses a NUL (`\u0000`) in any string of the body with 422 before any
/// handler sees it: one check for every JSON route, instead of a 500 from
/// PostgreSQL wherever such a string would reach the database.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // axum's own extractor checks the content type, the body limit and the syntax.
        let axum::Json(raw) = axum::Json::<Box<RawValue>>::from_request(req, state).await?;
        if crate::text::has_nul_escape(raw.get().as_bytes()) {
            return Err(ApiError::validation(format!(
                "{} must not contain NUL characters (\\u0000)",
                crate::text::nul_field(raw.get())
            )));
        }
        let axum::Json(value) = axum::Json::<T>::from_bytes(raw.get().as_bytes())?;
        Ok(Json(value))
    }
}

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// The client's address: the TCP peer, or, when the peer is one of
/// `TRUSTED_PROXIES`, the nearest address in `X-Forwarded-For` that is not a
/// trusted proxy (the rightmost entries are the ones our proxies appended; those
/// further left are the client's to forge). `None` in tests driven through `oneshot`.
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(ClientIp(peer.map(|peer| {
            forwarded_client(peer, &parts.headers, &state.settings.trusted_proxies)
        })))
    }
}

fn forwarded_client(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => continue,
            Ok(ip) => return ip,
            // Garbage where a proxy should have written an address: trust nothing left of it.
            Err(_) => return peer,
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.1.1.1, 2.2.2.2".parse().unwrap());
        // Not behind a trusted proxy: the header is the client's own words.
        assert_eq!(forwarded_client(proxy, &h, &[]), proxy);
        // Behind one: the address it appended.
        assert_eq!(
            forwarded_client(proxy, &h, &[proxy]),
            "2.2.2.2".parse::<IpAddr>().unwrap()
        );
        let inner: IpAddr = "2.2.2.2".parse().unwrap();
        assert_eq!(
            forwarded_client(proxy, &h, &[proxy, inner]),
            "1.1.1.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(forwarded_client(proxy, &HeaderMap::new(), &[proxy]), proxy);
    }
}
