//! Digests of backend responses, the fingerprints by which nodes compare
//! their replicas (MISSION, Divergence).
//!
//! A response's digest covers its status and body, and the headers a
//! service names (`digest_headers`, for example `etag`): not the others,
//! since `Date`, `Server` or a replay marker legitimately differ between
//! instances. A slot's digest folds the digests of its updates in order.
//! XXH3 is used because its output is fixed by its specification, so
//! nodes built by different compilers or versions agree; it is not a
//! defence against a malicious backend, only a fingerprint of an honest
//! one.

use xxhash_rust::xxh3::xxh3_64;

/// The digest of an empty slot (no update was applied).
pub const EMPTY: u64 = 0;

/// What a skipped duplicate contributes to its slot's digest: every node
/// skips the same ones (the decision is replicated state).
const SKIPPED: u64 = 0x9e37_79b9_7f4a_7c15;

/// The digest of one response: status, body and the named headers (name
/// in lower case, then value), length-prefixed so that no two different
/// responses are concatenated into the same bytes.
pub fn response(status: u16, body: &[u8], headers: &[(&str, &[u8])]) -> u64 {
    let mut bytes = Vec::with_capacity(16 + body.len());
    bytes.extend_from_slice(&status.to_be_bytes());
    bytes.extend_from_slice(&(body.len() as u64).to_be_bytes());
    bytes.extend_from_slice(body);
    for (name, value) in headers {
        bytes.extend_from_slice(&(name.len() as u64).to_be_bytes());
        bytes.extend_from_slice(name.to_ascii_lowercase().as_bytes());
        bytes.extend_from_slice(&(value.len() as u64).to_be_bytes());
        bytes.extend_from_slice(value);
    }
    xxh3_64(&bytes)
}

/// Fold one update's digest into its slot's.
pub fn fold(slot_digest: u64, update_digest: u64) -> u64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&slot_digest.to_be_bytes());
    bytes[8..].copy_from_slice(&update_digest.to_be_bytes());
    xxh3_64(&bytes)
}

/// Fold a skipped duplicate into its slot's digest.
pub fn fold_skipped(slot_digest: u64) -> u64 {
    fold(slot_digest, SKIPPED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_body_and_named_headers_count_and_nothing_else() {
        let base = response(201, b"{\"id\":1}", &[]);
        assert_eq!(base, response(201, b"{\"id\":1}", &[]));
        assert_ne!(base, response(200, b"{\"id\":1}", &[]));
        assert_ne!(base, response(201, b"{\"id\":2}", &[]));
        let etag = response(201, b"{\"id\":1}", &[("ETag", b"\"a\"")]);
        assert_eq!(etag, response(201, b"{\"id\":1}", &[("etag", b"\"a\"")]));
        assert_ne!(etag, response(201, b"{\"id\":1}", &[("etag", b"\"b\"")]));
    }

    #[test]
    fn a_slot_digest_depends_on_order() {
        let (a, b) = (response(200, b"a", &[]), response(200, b"b", &[]));
        assert_ne!(fold(fold(EMPTY, a), b), fold(fold(EMPTY, b), a));
        assert_ne!(fold(EMPTY, a), fold_skipped(EMPTY));
    }

    #[test]
    fn the_digest_is_fixed_across_builds() {
        // XXH3's reference vector for the empty input: the hash is the
        // specified one, not whatever a library version computes.
        assert_eq!(xxh3_64(b""), 0x2d06_8005_38d3_94c2);
        // And our encoding of a response never changes either, or nodes
        // of different versions would call each other diverged.
        assert_eq!(response(200, b"", &[]), 0x5c63_0d41_1c1b_d922);
    }
}
