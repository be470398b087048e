//! Secrets at rest: the webhook signing secrets the host stores (in the database, and in the
//! data dir's secret files) are sealed with the operator's key (ChaCha20-Poly1305, a random
//! nonce per value), so a copy of the data without the key does not reveal them.
//!
//! The key comes from `[server] secret_key_file` or `HOOKWASM_SECRET_KEY` (32 random bytes,
//! base64). A sealed value names its key (`sealed:v1:<key id>:<nonce and ciphertext>`). Values
//! stored before a key was set (plain `whsec_...`) are still read, and [`needs_reseal`] tells
//! the start-up pass which to write again: plain ones, and ones sealed with the previous key
//! (`previous_secret_key_file` / `HOOKWASM_PREVIOUS_SECRET_KEY`) during a key rotation.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{Context, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use sha2::{Digest, Sha256};

const PREFIX: &str = "sealed:v1:";

/// One sealing key and its id (the first 8 hex digits of its sha256).
struct Key {
    id: String,
    cipher: ChaCha20Poly1305,
}

impl Key {
    fn parse(text: &str, what: &str) -> anyhow::Result<Key> {
        let bytes = STANDARD.decode(text.trim()).with_context(|| format!("{what} is not base64"))?;
        if bytes.len() != 32 {
            bail!("{what} must be 32 bytes (base64 of `openssl rand 32`), got {}", bytes.len());
        }
        let id = hex::encode(&Sha256::digest(&bytes)[..4]);
        Ok(Key { id, cipher: ChaCha20Poly1305::new_from_slice(&bytes).expect("a 32-byte key") })
    }
}

/// The current key, and the previous one during a rotation.
pub struct Keys {
    current: Key,
    previous: Option<Key>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys(current {}, <redacted>)", self.current.id)
    }
}

/// Where a key is given: a file, else an environment variable.
pub struct KeySource<'a> {
    pub file: Option<&'a Path>,
    pub env: Option<String>,
    pub name: &'static str,
}

impl KeySource<'_> {
    fn read(&self) -> anyhow::Result<Option<Key>> {
        let text = match (self.file, &self.env) {
            (Some(path), _) => {
                std::fs::read_to_string(path).with_context(|| format!("reading {} {}", self.name, path.display()))?
            }
            (None, Some(text)) => text.clone(),
            (None, None) => return Ok(None),
        };
        Key::parse(&text, self.name).map(Some)
    }
}

impl Keys {
    /// The keys configured, or `None` when no current key is (secrets are stored plain).
    pub fn load(current: KeySource<'_>, previous: KeySource<'_>) -> anyhow::Result<Option<Keys>> {
        let Some(current) = current.read()? else {
            if previous.file.is_some() || previous.env.is_some() {
                bail!("a previous secret key is set without a current one ([server] secret_key_file)");
            }
            return Ok(None);
        };
        Ok(Some(Keys { current, previous: previous.read()? }))
    }

    fn seal(&self, plaintext: &str) -> String {
        let nonce: [u8; 12] = rand::random();
        let sealed = self.current.cipher.encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes()).expect("sealing");
        format!("{PREFIX}{}:{}", self.current.id, STANDARD.encode([&nonce[..], &sealed].concat()))
    }

    fn open(&self, stored: &str) -> anyhow::Result<String> {
        let Some(rest) = stored.strip_prefix(PREFIX) else { return Ok(stored.to_string()) };
        let (id, data) = rest.split_once(':').context("a sealed secret without its key id")?;
        let key = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|key| key.id == id)
            .with_context(|| {
                format!("a secret sealed with key {id}, which is neither the current secret key nor the previous one")
            })?;
        let data = STANDARD.decode(data).context("a sealed secret that is not base64")?;
        if data.len() < 12 {
            bail!("a sealed secret too short to hold its nonce");
        }
        let opened = key
            .cipher
            .decrypt(Nonce::from_slice(&data[..12]), &data[12..])
            .map_err(|_| anyhow::anyhow!("a sealed secret that does not open with key {id} (altered or corrupt)"))?;
        String::from_utf8(opened).context("a sealed secret that is not text")
    }
}

static KEYS: OnceLock<Option<Keys>> = OnceLock::new();

/// Sets the process's keys, once, at start (before any secret is read or written).
pub fn install(keys: Option<Keys>) {
    if KEYS.set(keys).is_err() {
        tracing::warn!("secret keys were already installed; keeping the first");
    }
}

fn keys() -> Option<&'static Keys> {
    KEYS.get().and_then(Option::as_ref)
}

/// `plaintext` as it is to be stored: sealed when a key is configured.
pub fn seal(plaintext: &str) -> String {
    keys().map_or_else(|| plaintext.to_string(), |keys| keys.seal(plaintext))
}

/// A stored secret in the clear: opened if sealed, as it is if plain.
pub fn open(stored: &str) -> anyhow::Result<String> {
    match keys() {
        Some(keys) => keys.open(stored),
        None if stored.starts_with(PREFIX) => {
            bail!("a sealed secret, and no secret key is configured ([server] secret_key_file or HOOKWASM_SECRET_KEY)")
        }
        None => Ok(stored.to_string()),
    }
}

/// Whether a stored secret should be written again: a key is configured and the value is plain
/// or sealed with another key.
pub fn needs_reseal(stored: &str) -> bool {
    keys().is_some_and(|keys| !stored.starts_with(&format!("{PREFIX}{}:", keys.current.id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        STANDARD.encode([byte; 32])
    }

    fn keys(current: u8, previous: Option<u8>) -> Keys {
        let source = |env: Option<String>, name| KeySource { file: None, env, name };
        Keys::load(source(Some(key(current)), "current"), source(previous.map(key), "previous")).unwrap().unwrap()
    }

    #[test]
    fn seals_opens_and_rotates() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let old = keys(1, None);
        let sealed = old.seal(secret);
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("MfKQ9r8G"), "{sealed}");
        assert_ne!(old.seal(secret), sealed, "a fresh nonce every time");
        assert_eq!(old.open(&sealed).unwrap(), secret);
        assert_eq!(old.open(secret).unwrap(), secret, "plain values written before a key still read");

        let rotated = keys(2, Some(1));
        assert_eq!(rotated.open(&sealed).unwrap(), secret, "the previous key opens what it sealed");
        let resealed = rotated.seal(secret);
        assert!(keys(2, None).open(&resealed).is_ok());
        let error = keys(3, None).open(&sealed).unwrap_err().to_string();
        assert!(error.contains("neither the current"), "{error}");

        let mut tampered = sealed.clone();
        tampered.replace_range(sealed.len() - 4.., "AAAA");
        assert!(old.open(&tampered).is_err(), "altered values are refused");
        assert!(format!("{old:?}").contains("redacted"));
    }

    #[test]
    fn keys_must_be_32_bytes_and_a_previous_key_needs_a_current_one() {
        let source = |env: Option<&str>, name| KeySource { file: None, env: env.map(String::from), name };
        assert!(Keys::load(source(Some("c2hvcnQ="), "current"), source(None, "previous")).is_err());
        assert!(Keys::load(source(None, "current"), source(Some(&key(1)), "previous")).is_err());
        assert!(Keys::load(source(None, "current"), source(None, "previous")).unwrap().is_none());
    }
}
