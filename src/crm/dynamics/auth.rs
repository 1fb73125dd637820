//! Microsoft Entra ID client credentials for the Dataverse application user:
//! a client secret, or a certificate-signed client assertion.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use url::Url;

use crate::http::{FetchedToken, TokenError, TokenSource, post_token_form};
use crate::metrics::ENTRA_ID;

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Lifetime of a client assertion.
const ASSERTION_LIFETIME_S: u64 = 600;

/// How the app registration proves who it is.
#[derive(Clone)]
pub enum DynamicsCredential {
    ClientSecret(SecretString),
    /// A certificate uploaded to the app registration: its RSA private key
    /// (PEM) and its SHA-1 thumbprint in hex, as the Entra portal shows it.
    Certificate {
        private_key_pem: SecretString,
        thumbprint_sha1_hex: String,
    },
}

impl std::fmt::Debug for DynamicsCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DynamicsCredential::ClientSecret(_) => f.write_str("ClientSecret([REDACTED])"),
            DynamicsCredential::Certificate {
                thumbprint_sha1_hex,
                ..
            } => f
                .debug_struct("Certificate")
                .field("thumbprint_sha1_hex", thumbprint_sha1_hex)
                .field("private_key_pem", &"[REDACTED]")
                .finish(),
        }
    }
}

/// The client credentials grant against the configured token URL.
pub struct EntraClientCredentials {
    pub http: reqwest::Client,
    pub token_url: Url,
    pub client_id: String,
    pub scope: String,
    pub credential: DynamicsCredential,
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: u64,
    iat: u64,
    exp: u64,
}

impl EntraClientCredentials {
    /// A signed JWT client assertion (RS256, `x5t` = thumbprint).
    fn client_assertion(
        &self,
        private_key_pem: &SecretString,
        thumbprint_sha1_hex: &str,
    ) -> Result<String, String> {
        let thumbprint = decode_hex(thumbprint_sha1_hex).ok_or_else(|| {
            "the certificate thumbprint is not a hexadecimal SHA-1 thumbprint".to_owned()
        })?;
        let key = EncodingKey::from_rsa_pem(private_key_pem.expose_secret().as_bytes())
            .map_err(|e| format!("the certificate private key is unusable: {e}"))?;
        let mut header = Header::new(Algorithm::RS256);
        header.x5t = Some(URL_SAFE_NO_PAD.encode(thumbprint));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let claims = AssertionClaims {
            aud: self.token_url.as_str(),
            iss: &self.client_id,
            sub: &self.client_id,
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: now,
            iat: now,
            exp: now + ASSERTION_LIFETIME_S,
        };
        jsonwebtoken::encode(&header, &claims, &key)
            .map_err(|e| format!("signing the client assertion failed: {e}"))
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    if s.is_empty() || !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl TokenSource for EntraClientCredentials {
    type Error = TokenError;

    async fn fetch_token(&self) -> Result<FetchedToken, TokenError> {
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "client_credentials"),
            ("client_id", &self.client_id),
            ("scope", &self.scope),
        ];
        let assertion;
        match &self.credential {
            DynamicsCredential::ClientSecret(secret) => {
                form.push(("client_secret", secret.expose_secret()));
            }
            DynamicsCredential::Certificate {
                private_key_pem,
                thumbprint_sha1_hex,
            } => {
                assertion = self
                    .client_assertion(private_key_pem, thumbprint_sha1_hex)
                    .map_err(TokenError::Malformed)?;
                form.push(("client_assertion_type", ASSERTION_TYPE));
                form.push(("client_assertion", &assertion));
            }
        }
        let response = post_token_form(&self.http, ENTRA_ID, &self.token_url, &form).await?;
        Ok(response.into_fetched())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_are_read_as_hex_in_any_usual_spelling() {
        assert_eq!(decode_hex("0aFF"), Some(vec![0x0a, 0xff]));
        assert_eq!(decode_hex("0a:ff"), Some(vec![0x0a, 0xff]));
        assert_eq!(decode_hex("0af"), None);
        assert_eq!(decode_hex("zz"), None);
        assert_eq!(decode_hex(""), None);
    }

    #[test]
    fn credentials_never_show_their_secret() {
        let c = DynamicsCredential::ClientSecret(SecretString::from("s3cr3t"));
        assert!(!format!("{c:?}").contains("s3cr3t"));
        let c = DynamicsCredential::Certificate {
            private_key_pem: SecretString::from("-----BEGIN PRIVATE KEY-----"),
            thumbprint_sha1_hex: "ab".into(),
        };
        assert!(!format!("{c:?}").contains("BEGIN"));
    }
}
