//! Signature and token checks shared by the sources: HMAC-SHA256 over the raw body and
//! constant-time token comparison. No SHA-1 anywhere.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Lower-case hex HMAC-SHA256 of `body` under `secret`.
pub fn hmac_sha256_hex(secret: impl AsRef<[u8]>, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_ref()).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether `signature_hex` is the HMAC-SHA256 of `body` under `secret` (constant time).
pub fn hmac_sha256_matches(secret: &str, body: &[u8], signature_hex: &str) -> bool {
    let Ok(sig) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// Constant-time equality of two tokens.
pub fn tokens_match(expected: &str, presented: &str) -> bool {
    expected.as_bytes().ct_eq(presented.as_bytes()).into()
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_round_trip_and_rejects() {
        // Reference value from GitHub's documentation ("Validating webhook deliveries").
        let sig = hmac_sha256_hex("It's a Secret to Everybody", b"Hello, World!");
        assert_eq!(
            sig,
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        assert!(hmac_sha256_matches(
            "It's a Secret to Everybody",
            b"Hello, World!",
            &sig
        ));
        assert!(!hmac_sha256_matches("wrong", b"Hello, World!", &sig));
        assert!(!hmac_sha256_matches(
            "It's a Secret to Everybody",
            b"Hello, World!",
            "zz"
        ));
        assert!(
            tokens_match("abc", "abc") && !tokens_match("abc", "abd") && !tokens_match("abc", "ab")
        );
        assert_eq!(bearer("Bearer t0k"), Some("t0k"));
        assert_eq!(bearer("Basic t0k"), None);
    }
}
