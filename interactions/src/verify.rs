//! Discord's request signature: Ed25519 over the `X-Signature-Timestamp` value followed by the
//! raw body, with the application's public key; checked before anything else is read. A
//! timestamp outside a small window is refused too, so a captured request cannot be replayed
//! later (one replayed within the window is caught by the stream's de-duplication of
//! `interaction:<id>`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signature, VerifyingKey};

/// `X-Signature-Ed25519`.
pub const SIGNATURE_HEADER: &str = "x-signature-ed25519";
/// `X-Signature-Timestamp`.
pub const TIMESTAMP_HEADER: &str = "x-signature-timestamp";

/// Why a request is refused before it is read; each is a bounded metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No signature or no timestamp header.
    #[error("the request is not signed")]
    Unsigned,
    /// The signature is not 128 hex digits, or does not verify.
    #[error("the signature does not verify")]
    BadSignature,
    /// The timestamp is not a number of seconds, or outside the window.
    #[error("the timestamp is outside the accepted window")]
    StaleTimestamp,
}

impl Refusal {
    /// The metric label.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::BadSignature => "bad_signature",
            Self::StaleTimestamp => "stale_timestamp",
        }
    }
}

/// A public key that is not 64 hex digits of a valid Ed25519 point.
#[derive(Debug, thiserror::Error)]
#[error("the public key must be the application's Ed25519 key as 64 hex digits: {0}")]
pub struct BadPublicKey(&'static str);

/// Checks requests against one application's public key.
#[derive(Debug, Clone)]
pub struct Verifier {
    key: VerifyingKey,
    window: Duration,
}

impl Verifier {
    /// The verifier of `public_key_hex` (the application's "Public Key" in Discord's developer
    /// portal, `verify_key` of `GET /applications/@me`), accepting timestamps within `window`
    /// of this host's clock either way.
    ///
    /// # Errors
    /// [`BadPublicKey`] when the key is not 64 hex digits of a valid point.
    pub fn new(public_key_hex: &str, window: Duration) -> Result<Self, BadPublicKey> {
        let mut bytes = [0_u8; 32];
        decode_hex(public_key_hex.trim(), &mut bytes).ok_or(BadPublicKey("not 64 hex digits"))?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| BadPublicKey("not a valid key"))?;
        Ok(Self { key, window })
    }

    /// Checks a request: its signature over `timestamp ‖ body`, then its timestamp against
    /// `now`.
    ///
    /// # Errors
    /// The [`Refusal`].
    pub fn verify(
        &self,
        signature_hex: Option<&[u8]>,
        timestamp: Option<&[u8]>,
        body: &[u8],
        now: SystemTime,
    ) -> Result<(), Refusal> {
        let (Some(signature_hex), Some(timestamp)) = (signature_hex, timestamp) else {
            return Err(Refusal::Unsigned);
        };
        let mut signature = [0_u8; 64];
        let signature_hex =
            std::str::from_utf8(signature_hex).map_err(|_| Refusal::BadSignature)?;
        decode_hex(signature_hex, &mut signature).ok_or(Refusal::BadSignature)?;
        let mut message = Vec::with_capacity(timestamp.len() + body.len());
        message.extend_from_slice(timestamp);
        message.extend_from_slice(body);
        // Strict: refuses the malleable forms (non-canonical S, small-order keys) as well.
        self.key
            .verify_strict(&message, &Signature::from_bytes(&signature))
            .map_err(|_| Refusal::BadSignature)?;
        let seconds: u64 = std::str::from_utf8(timestamp)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or(Refusal::StaleTimestamp)?;
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if now.abs_diff(seconds) > self.window.as_secs() {
            return Err(Refusal::StaleTimestamp);
        }
        Ok(())
    }
}

/// Decodes exactly `out.len()` bytes of hex (either case); `None` for anything else.
fn decode_hex(hex: &str, out: &mut [u8]) -> Option<()> {
    let hex = hex.as_bytes();
    if hex.len() != out.len() * 2 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let digit = |c: u8| char::from(c).to_digit(16);
        *byte = u8::try_from(digit(pair[0])? << 4 | digit(pair[1])?).ok()?;
    }
    Some(())
}

/// Lower-case hex of `bytes`.
#[must_use]
pub fn encode_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use ed25519_dalek::{Signer, SigningKey};

    use super::{Refusal, Verifier, encode_hex};

    const BODY: &[u8] = br#"{"type":1,"id":"1","application_id":"2","token":"t","version":1}"#;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn sign(key: &SigningKey, timestamp: &str, body: &[u8]) -> String {
        let mut message = timestamp.as_bytes().to_vec();
        message.extend_from_slice(body);
        encode_hex(&key.sign(&message).to_bytes())
    }

    fn verifier(key: &SigningKey) -> Verifier {
        Verifier::new(
            &encode_hex(key.verifying_key().as_bytes()),
            Duration::from_secs(60),
        )
        .unwrap()
    }

    #[test]
    fn a_valid_signature_passes() {
        let key = key(7);
        let signature = sign(&key, "1700000000", BODY);
        let check = verifier(&key).verify(
            Some(signature.as_bytes()),
            Some(b"1700000000"),
            BODY,
            at(1_700_000_030),
        );
        assert_eq!(check, Ok(()));
        // Upper-case hex is the same signature.
        let upper = signature.to_uppercase();
        assert_eq!(
            verifier(&key).verify(
                Some(upper.as_bytes()),
                Some(b"1700000000"),
                BODY,
                at(1_700_000_000)
            ),
            Ok(())
        );
    }

    #[test]
    fn a_tampered_body_or_timestamp_fails() {
        let key = key(7);
        let signature = sign(&key, "1700000000", BODY);
        let v = verifier(&key);
        let mut tampered = BODY.to_vec();
        tampered[9] = b'2';
        assert_eq!(
            v.verify(
                Some(signature.as_bytes()),
                Some(b"1700000000"),
                &tampered,
                at(1_700_000_000)
            ),
            Err(Refusal::BadSignature)
        );
        assert_eq!(
            v.verify(
                Some(signature.as_bytes()),
                Some(b"1700000001"),
                BODY,
                at(1_700_000_000)
            ),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn an_old_or_future_timestamp_fails_even_when_signed() {
        let key = key(7);
        let v = verifier(&key);
        let old = sign(&key, "1700000000", BODY);
        assert_eq!(
            v.verify(
                Some(old.as_bytes()),
                Some(b"1700000000"),
                BODY,
                at(1_700_000_061)
            ),
            Err(Refusal::StaleTimestamp)
        );
        assert_eq!(
            v.verify(
                Some(old.as_bytes()),
                Some(b"1700000000"),
                BODY,
                at(1_699_999_939)
            ),
            Err(Refusal::StaleTimestamp)
        );
        let words = sign(&key, "yesterday", BODY);
        assert_eq!(
            v.verify(
                Some(words.as_bytes()),
                Some(b"yesterday"),
                BODY,
                at(1_700_000_000)
            ),
            Err(Refusal::StaleTimestamp)
        );
    }

    #[test]
    fn the_wrong_key_or_a_malformed_signature_fails() {
        let signature = sign(&key(8), "1700000000", BODY);
        let v = verifier(&key(7));
        assert_eq!(
            v.verify(
                Some(signature.as_bytes()),
                Some(b"1700000000"),
                BODY,
                at(1_700_000_000)
            ),
            Err(Refusal::BadSignature)
        );
        for bad in ["", "zz", &signature[..126], &format!("{signature}00")] {
            assert_eq!(
                v.verify(
                    Some(bad.as_bytes()),
                    Some(b"1700000000"),
                    BODY,
                    at(1_700_000_000)
                ),
                Err(Refusal::BadSignature),
                "{bad:?}"
            );
        }
        assert_eq!(
            v.verify(None, Some(b"1700000000"), BODY, at(1_700_000_000)),
            Err(Refusal::Unsigned)
        );
        assert_eq!(
            v.verify(Some(signature.as_bytes()), None, BODY, at(1_700_000_000)),
            Err(Refusal::Unsigned)
        );
    }

    #[test]
    fn a_public_key_must_be_64_hex_digits_of_a_point() {
        assert!(Verifier::new("abc", Duration::from_secs(5)).is_err());
        assert!(Verifier::new(&"g".repeat(64), Duration::from_secs(5)).is_err());
        let good = encode_hex(key(1).verifying_key().as_bytes());
        assert!(Verifier::new(&format!(" {good}\n"), Duration::from_secs(5)).is_ok());
    }
}
