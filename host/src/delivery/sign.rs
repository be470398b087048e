//! Standard Webhooks signing: `v1,base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// A webhook signing secret (`whsec_` + base64 of the key bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    key: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a webhook secret must be `whsec_` followed by base64 of 24 to 64 bytes")]
pub struct InvalidSecret;

impl Secret {
    /// Parses `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Secret, InvalidSecret> {
        let encoded = text.strip_prefix(PREFIX).ok_or(InvalidSecret)?;
        let key = STANDARD.decode(encoded).map_err(|_| InvalidSecret)?;
        if !(24..=64).contains(&key.len()) {
            return Err(InvalidSecret);
        }
        Ok(Secret { key })
    }

    /// A new random 32-byte secret.
    pub fn generate() -> Secret {
        Secret { key: rand::random::<[u8; 32]>().to_vec() }
    }

    /// The `whsec_...` form, for config and for handing to the receiver.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.key))
    }

    /// The `webhook-signature` value for these exact bytes.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_test_vector() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rejects_malformed_secrets_and_round_trips_generated_ones() {
        assert!(Secret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(Secret::parse("whsec_!!!").is_err());
        assert!(Secret::parse("whsec_AAAA").is_err());
        let secret = Secret::generate();
        assert_eq!(Secret::parse(&secret.expose()).unwrap(), secret);
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    }

    proptest::proptest! {
        /// The signature is the official library's on any key, id, timestamp and body (text:
        /// the library signs only UTF-8).
        #[test]
        fn matches_the_official_library(key: [u8; 32], id in "[ -~]{1,64}", timestamp in 0i64..4_102_444_800, body: String) {
            let secret = Secret::parse(&format!("{PREFIX}{}", STANDARD.encode(key))).unwrap();
            let official = standardwebhooks::Webhook::new(&secret.expose()).unwrap();
            let ours = secret.sign(&id, timestamp, body.as_bytes());
            proptest::prop_assert_eq!(ours, official.sign(&id, timestamp, body.as_bytes()).unwrap());
        }
    }
}
