//! Deterministic identities: item keys, and the trace and span IDs derived from them, so that a
//! redelivery, an out-of-order arrival or a cold start all converge on the same IDs.

use sha2::{Digest, Sha256};

/// The stable key of a work item: `<source>/<kind>/<scope>/<id>`, lower-cased scope.
pub fn item_key(source: &str, kind: &str, scope: &str, id: &str) -> String {
    format!("{source}/{kind}/{}/{id}", scope.to_ascii_lowercase())
}

fn digest(domain: &str, text: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    h.update([0]);
    h.update(text.as_bytes());
    h.finalize().into()
}

/// The trace ID (32 hex digits) of a trace whose root is the item `root_key`.
pub fn trace_id(root_key: &str) -> String {
    hex::encode(&digest("valuestream.trace", root_key)[..16])
}

/// The span ID (16 hex digits) of generation `generation` of item `key` (a reopening starts the
/// next generation).
pub fn span_id(key: &str, generation: u32) -> String {
    let text = format!("{key}#{generation}");
    let d = digest("valuestream.span", &text);
    // An all-zero span ID is invalid in OpenTelemetry; a zero digest prefix is astronomically
    // unlikely, but keep the rule anyway.
    let mut id = [0u8; 8];
    id.copy_from_slice(&d[..8]);
    if id == [0; 8] {
        id[7] = 1;
    }
    hex::encode(id)
}

/// The tag a fact keeps of a delivery that brought it (16 hex digits: 64 bits of SHA-256 of the
/// source and the delivery ID). Redelivery detection compares tags within one item's facts only,
/// so 64 bits leave a collision practically impossible while keeping stored items small.
pub fn delivery_tag(source: &str, delivery_id: &str) -> String {
    hex::encode(&digest(source, delivery_id)[..8])
}

/// A short, stable ID for free text (delivery bodies without an ID, metric series…).
pub fn short_hash(text: &[u8]) -> String {
    hex::encode(&Sha256::digest(text)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let k = item_key("github", "issue", "Codertocat/Hello-World", "1");
        assert_eq!(k, "github/issue/codertocat/hello-world/1");
        assert_eq!(trace_id(&k), trace_id(&k));
        assert_eq!(trace_id(&k).len(), 32);
        assert_eq!(span_id(&k, 0).len(), 16);
        assert_ne!(span_id(&k, 0), span_id(&k, 1));
        assert_ne!(
            trace_id(&k),
            trace_id("github/issue/codertocat/hello-world/2")
        );
    }
}
