//! Plugin signatures: an ed25519 signature over a plugin file's sha256, kept beside the file as
//! `FILE.sig` (`round-robin.wasm.sig`), checked against the public keys a host trusts
//! (`[plugins.trusted_keys]`) and required with `[plugins] require_signed = true`.
//!
//! A signature file is text, one field per line:
//!
//! ```text
//! spear-plugin-signature v1
//! key <the signer's public key: base64 of 32 bytes>
//! sha256 <the signed content's sha256, hex>
//! signature <base64 of the 64-byte ed25519 signature>
//! ```
//!
//! The signed message is the first line and a newline, then the 32 raw bytes of the sha256, so a
//! signature of anything else cannot pass for a plugin signature. A signing key file (made by
//! `spear plugin keygen`) is `spear-plugin-key v1` and a line with the base64 of the 32-byte
//! ed25519 seed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// First line of a signature file.
pub const SIG_HEADER: &str = "spear-plugin-signature v1";
/// First line of a signing key file.
pub const KEY_HEADER: &str = "spear-plugin-key v1";
/// Largest signature or key file read.
const MAX_TEXT: u64 = 4096;

/// The signature file of a plugin file: its name with `.sig` added.
pub fn sig_path(plugin: &Path) -> PathBuf {
    let mut name = plugin.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// A small text file, or None when it does not exist; an error when it cannot be read or is
/// larger than a signature could be.
fn read_small(path: &Path) -> Result<Option<String>, String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut text = String::new();
    file.take(MAX_TEXT + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_TEXT {
        return Err(format!(
            "{} is larger than {MAX_TEXT} bytes: not a signature",
            path.display()
        ));
    }
    Ok(Some(text))
}

/// The text of a plugin's signature file ("" when there is none), for change detection.
pub fn sig_text(plugin: &Path) -> String {
    read_small(&sig_path(plugin))
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// A parsed signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The signer's public key.
    pub key: [u8; 32],
    /// The signed content's sha256.
    pub sha256: [u8; 32],
    /// The ed25519 signature.
    pub signature: [u8; 64],
}

fn message(sha256: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(SIG_HEADER.len() + 33);
    m.extend_from_slice(SIG_HEADER.as_bytes());
    m.push(b'\n');
    m.extend_from_slice(sha256);
    m
}

fn fixed<const N: usize>(what: &str, bytes: Vec<u8>) -> Result<[u8; N], String> {
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| format!("{what}: {len} bytes, not {N}"))
}

/// A public key written as base64 (as in `[plugins.trusted_keys]` and signature files).
pub fn decode_key(text: &str) -> Result<[u8; 32], String> {
    let bytes = B64
        .decode(text.trim())
        .map_err(|e| format!("public key: not base64: {e}"))?;
    let key: [u8; 32] = fixed("public key", bytes)?;
    VerifyingKey::from_bytes(&key).map_err(|e| format!("public key: not an ed25519 key: {e}"))?;
    Ok(key)
}

/// A public key as base64.
pub fn encode_key(key: &[u8; 32]) -> String {
    B64.encode(key)
}

impl Signature {
    /// Parse a signature file's text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        if lines.next() != Some(SIG_HEADER) {
            return Err(format!(
                "not a plugin signature (first line is not `{SIG_HEADER}`)"
            ));
        }
        let mut field = |name: &str| -> Result<String, String> {
            let line = lines
                .next()
                .ok_or_else(|| format!("the `{name}` line is missing"))?;
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .map(|v| v.trim().to_owned())
                .ok_or_else(|| format!("expected the `{name}` line, found `{line}`"))
        };
        let key = decode_key(&field("key")?)?;
        let sha = field("sha256")?;
        let sha256 = fixed(
            "sha256",
            hex::decode(&sha).map_err(|_| format!("sha256: `{sha}` is not hex"))?,
        )?;
        let signature = fixed(
            "signature",
            B64.decode(field("signature")?)
                .map_err(|e| format!("signature: not base64: {e}"))?,
        )?;
        Ok(Self {
            key,
            sha256,
            signature,
        })
    }

    /// Whether this signature is a valid one, by its key, of exactly `bytes`.
    pub fn verify(&self, bytes: &[u8]) -> Result<(), String> {
        let actual: [u8; 32] = Sha256::digest(bytes).into();
        if actual != self.sha256 {
            return Err(format!(
                "the signature is for content sha256 {}, the file's is {}",
                hex::encode(self.sha256),
                hex::encode(actual)
            ));
        }
        let key = VerifyingKey::from_bytes(&self.key).map_err(|e| e.to_string())?;
        key.verify(
            &message(&self.sha256),
            &ed25519_dalek::Signature::from_bytes(&self.signature),
        )
        .map_err(|_| "the signature does not verify with its key (forged or damaged)".to_owned())
    }
}

/// A signing key (the ed25519 seed).
#[derive(Clone)]
pub struct Key(SigningKey);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key(public {})", self.public())
    }
}

impl Key {
    /// A new random key, from the operating system's generator.
    pub fn generate() -> Result<Self, String> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| format!("no randomness: {e}"))?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// The key in the file at `path` (a `spear plugin keygen` file).
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = read_small(path)?.ok_or_else(|| format!("{}: no such file", path.display()))?;
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        if lines.next() != Some(KEY_HEADER) {
            return Err(format!(
                "{}: not a plugin signing key (first line is not `{KEY_HEADER}`)",
                path.display()
            ));
        }
        let seed = B64
            .decode(lines.next().unwrap_or_default())
            .map_err(|e| format!("{}: the key is not base64: {e}", path.display()))?;
        let seed: [u8; 32] = fixed("signing key", seed)?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// The key file's text (secret: write it with mode 0600).
    pub fn file_text(&self) -> String {
        format!("{KEY_HEADER}\n{}\n", B64.encode(self.0.to_bytes()))
    }

    /// The public key, base64.
    pub fn public(&self) -> String {
        encode_key(&self.0.verifying_key().to_bytes())
    }

    /// The signature file's text for content `bytes`.
    pub fn sign(&self, bytes: &[u8]) -> String {
        let sha: [u8; 32] = Sha256::digest(bytes).into();
        let signature = self.0.sign(&message(&sha));
        format!(
            "{SIG_HEADER}\nkey {}\nsha256 {}\nsignature {}\n",
            self.public(),
            hex::encode(sha),
            B64.encode(signature.to_bytes())
        )
    }
}

/// Which signatures a host requires: `[plugins] require_signed` and `[plugins.trusted_keys]`
/// (name → public key, base64).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SigningPolicy {
    /// Refuse a plugin file without a valid signature by a trusted key.
    pub require: bool,
    /// Trusted public keys by name.
    pub keys: BTreeMap<String, String>,
}

impl SigningPolicy {
    /// The name of the trusted key `key`, if it is trusted.
    pub fn trusted(&self, key: &[u8; 32]) -> Option<&str> {
        let key = encode_key(key);
        self.keys
            .iter()
            .find(|(_, k)| k.trim() == key)
            .map(|(name, _)| name.as_str())
    }

    /// Check plugin `bytes` against its signature file's text (`""`: none): the name of the
    /// trusted key that signed it; `None` when no signature is required and none is valid by a
    /// trusted key; the reason of the refusal when one is required and this is not it.
    pub fn check(&self, sig_text: &str, bytes: &[u8]) -> Result<Option<String>, String> {
        let verdict = if sig_text.is_empty() {
            Err("unsigned: there is no FILE.sig beside it".to_owned())
        } else {
            Signature::parse(sig_text).and_then(|sig| {
                let name = self.trusted(&sig.key).ok_or_else(|| {
                    format!(
                        "signed by key {}, which is not in plugins.trusted_keys",
                        encode_key(&sig.key)
                    )
                })?;
                sig.verify(bytes)?;
                Ok(name.to_owned())
            })
        };
        match verdict {
            Ok(name) => Ok(Some(name)),
            Err(e) if self.require => Err(format!("{e} (plugins.require_signed = true)")),
            Err(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(key: &Key) -> SigningPolicy {
        SigningPolicy {
            require: true,
            keys: [("release".to_owned(), key.public())].into(),
        }
    }

    #[test]
    fn a_signature_verifies_only_its_content_by_a_trusted_key() {
        let key = Key::generate().unwrap();
        let sig = key.sign(b"plugin bytes");
        let p = policy(&key);
        assert_eq!(p.check(&sig, b"plugin bytes"), Ok(Some("release".into())));
        let other = p.check(&sig, b"other bytes").unwrap_err();
        assert!(
            other.contains("the signature is for content sha256"),
            "{other}"
        );
        let unsigned = p.check("", b"plugin bytes").unwrap_err();
        assert!(unsigned.contains("unsigned"), "{unsigned}");
        assert!(unsigned.contains("plugins.require_signed"), "{unsigned}");
        let stranger = Key::generate().unwrap();
        let e = p
            .check(&stranger.sign(b"plugin bytes"), b"plugin bytes")
            .unwrap_err();
        assert!(e.contains("not in plugins.trusted_keys"), "{e}");
        // Not required: nothing is refused, and only a trusted signer is named.
        let relaxed = SigningPolicy {
            require: false,
            ..p.clone()
        };
        assert_eq!(relaxed.check("", b"x"), Ok(None));
        assert_eq!(
            relaxed.check(&sig, b"plugin bytes"),
            Ok(Some("release".into()))
        );
    }

    #[test]
    fn a_forged_or_damaged_signature_is_refused() {
        let key = Key::generate().unwrap();
        let p = policy(&key);
        let sig = key.sign(b"plugin bytes");
        // The same key and sha256 line, another signature.
        let line = sig.lines().find(|l| l.starts_with("signature ")).unwrap();
        let forged = sig.replace(line, &format!("signature {}", B64.encode([7u8; 64])));
        let e = p.check(&forged, b"plugin bytes").unwrap_err();
        assert!(e.contains("does not verify"), "{e}");
        for bad in [
            "hello",
            "spear-plugin-signature v1\nkey x\n",
            &sig[..sig.len() / 2],
        ] {
            assert!(p.check(bad, b"plugin bytes").is_err(), "{bad}");
        }
    }

    #[test]
    fn a_key_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::generate().unwrap();
        std::fs::write(dir.path().join("k"), key.file_text()).unwrap();
        let back = Key::read(&dir.path().join("k")).unwrap();
        assert_eq!(back.public(), key.public());
        assert_eq!(
            decode_key(&key.public()).map(|k| encode_key(&k)),
            Ok(key.public())
        );
        assert!(decode_key("AAAA").is_err());
        assert_eq!(
            sig_path(Path::new("/p/round-robin.wasm")),
            Path::new("/p/round-robin.wasm.sig")
        );
    }
}
