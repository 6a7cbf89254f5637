//! HS256 access tokens and opaque refresh tokens.

use std::time::Duration;

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::ApiError;

/// How far in the future `iat` or `nbf` may lie: clocks of several gateways
/// drift by seconds, not minutes. A token "issued" later than this was minted
/// by someone holding the key with a forged clock, or it is not valid yet.
pub const FUTURE_LEEWAY_S: i64 = 30;

/// Every field but `nbf` is required: a token missing one is rejected while decoding.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Uuid,
    exp: i64,
    iat: i64,
    jti: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
}

/// What a verified access token says.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    pub user: Uuid,
    /// Unix seconds.
    pub expires_at: i64,
}

#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

impl TokenKeys {
    pub fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        // The algorithm is pinned here, never taken from the token's header.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 5;
        validation.validate_exp = true;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl,
            refresh_ttl,
        }
    }

    pub fn issue(&self, user: Uuid) -> Result<String, ApiError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user,
            iat: now,
            exp: now + self.access_ttl.as_secs() as i64,
            jti: Uuid::new_v4(),
            nbf: None,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(ApiError::internal)
    }

    /// The user id of a valid, unexpired token.
    pub fn verify(&self, token: &str) -> Result<Uuid, ApiError> {
        self.verify_access(token).map(|a| a.user)
    }

    /// The user and expiry of a valid, unexpired token (a socket closes at the expiry).
    pub fn verify_access(&self, token: &str) -> Result<Access, ApiError> {
        use jsonwebtoken::errors::ErrorKind;
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => {
                let now = chrono::Utc::now().timestamp();
                let claims = data.claims;
                let latest = now + FUTURE_LEEWAY_S;
                if claims.iat > latest || claims.nbf.is_some_and(|nbf| nbf > latest) {
                    return Err(ApiError::Unauthorized(
                        "invalid_token",
                        "access token is not valid yet".into(),
                    ));
                }
                Ok(Access {
                    user: claims.sub,
                    expires_at: claims.exp,
                })
            }
            Err(e) => Err(ApiError::Unauthorized(
                match e.kind() {
                    ErrorKind::ExpiredSignature => "token_expired",
                    _ => "invalid_token",
                },
                match e.kind() {
                    ErrorKind::ExpiredSignature => "access token expired".into(),
                    _ => "invalid access token".into(),
                },
            )),
        }
    }
}

/// 256 random bits, URL-safe.
pub fn new_refresh_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Refresh tokens are stored only as this hash.
pub fn hash_refresh_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> TokenKeys {
        TokenKeys::new(
            b"0123456789abcdef0123456789abcdef",
            Duration::from_secs(60),
            Duration::from_secs(600),
        )
    }

    #[test]
    fn issued_token_verifies_to_its_user() {
        let k = keys();
        let u = Uuid::new_v4();
        assert_eq!(k.verify(&k.issue(u).unwrap()).unwrap(), u);
    }

    #[test]
    fn tampered_or_foreign_tokens_are_refused() {
        let k = keys();
        let t = k.issue(Uuid::new_v4()).unwrap();
        let mut tampered = t.clone();
        tampered.pop();
        assert!(k.verify(&tampered).is_err());
        let other = TokenKeys::new(
            b"another-secret-another-secret-xx",
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        assert!(k.verify(&other.issue(Uuid::new_v4()).unwrap()).is_err());
        // alg=none and missing claims
        let none = format!(
            "{}.{}.",
            b64("{\"alg\":\"none\",\"typ\":\"JWT\"}"),
            b64("{\"sub\":\"00000000-0000-0000-0000-000000000000\",\"exp\":9999999999}")
        );
        assert!(k.verify(&none).is_err());
    }

    #[test]
    fn expired_token_is_refused() {
        let k = keys();
        let claims = Claims {
            sub: Uuid::new_v4(),
            iat: 1,
            exp: 2,
            jti: Uuid::new_v4(),
            nbf: None,
        };
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &k.encoding).unwrap();
        assert!(matches!(
            k.verify(&t),
            Err(ApiError::Unauthorized("token_expired", _))
        ));
    }

    fn signed(k: &TokenKeys, iat: i64, nbf: Option<i64>) -> String {
        let claims = Claims {
            sub: Uuid::new_v4(),
            iat,
            exp: chrono::Utc::now().timestamp() + 3600,
            jti: Uuid::new_v4(),
            nbf,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &k.encoding).unwrap()
    }

    #[test]
    fn token_issued_or_valid_only_in_the_future_is_refused() {
        let k = keys();
        let now = chrono::Utc::now().timestamp();
        let ahead = now + FUTURE_LEEWAY_S + 60;
        assert!(matches!(
            k.verify(&signed(&k, ahead, None)),
            Err(ApiError::Unauthorized("invalid_token", _))
        ));
        assert!(matches!(
            k.verify(&signed(&k, now, Some(ahead))),
            Err(ApiError::Unauthorized("invalid_token", _))
        ));
        // Clock drift within the leeway is tolerated.
        let drift = now + FUTURE_LEEWAY_S / 2;
        assert!(k.verify(&signed(&k, drift, Some(drift))).is_ok());
        assert!(k.verify(&signed(&k, now - 10, Some(now - 10))).is_ok());
    }

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }
}
