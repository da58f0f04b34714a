//! Literal replacements in a body, whole or as it streams by.
//!
//! An adapter that rewrites addresses in answers (a backend's own host in
//! an XML listing, a service root in an OData feed) names byte strings and
//! what each becomes. A read's body is never held whole: [`Streaming`]
//! rewrites chunk by chunk and holds back only the tail of a chunk that
//! could be the start of a match (less than the longest pattern), so
//! memory stays bounded whatever the body's size and however the backend
//! cut it into chunks.

use bytes::{Bytes, BytesMut};

/// Patterns and their replacements, the longest pattern tried first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replace {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
    longest: usize,
    /// A match counts only where the text does not go on with what could
    /// continue it (`urls`).
    boundary: bool,
}

impl Replace {
    /// Replacements for `pairs`; `None` when there is nothing to replace
    /// (no pair, or each maps a string onto itself). Empty patterns are
    /// left out: they would match everywhere.
    pub fn new(pairs: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Option<Replace> {
        let mut pairs: Vec<_> = pairs
            .into_iter()
            .filter(|(from, to)| !from.is_empty() && from != to)
            .collect();
        pairs.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
        pairs.dedup_by(|a, b| a.0 == b.0);
        let longest = pairs.first()?.0.len();
        Some(Replace {
            pairs,
            longest,
            boundary: false,
        })
    }

    /// Replacements of URL roots: a root matches only where the URL does
    /// not go on with a character of the same segment
    /// (`http://h:1000` is not in `http://h:10000/x`, nor `/acct` in
    /// `/acct2`).
    pub fn urls(pairs: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>) -> Option<Replace> {
        let mut r = Replace::new(pairs)?;
        r.boundary = true;
        Some(r)
    }

    /// `body` with every match replaced, or `None` if nothing matched.
    pub fn whole(&self, body: &[u8]) -> Option<Bytes> {
        let mut out = BytesMut::new();
        let (done, matched) = self.scan(body, &mut out, true);
        debug_assert_eq!(done, body.len());
        matched.then(|| out.freeze())
    }

    /// A rewriter for a body that arrives in chunks.
    pub fn streaming(self) -> Streaming {
        Streaming {
            replace: self,
            carry: Vec::new(),
        }
    }

    /// Copy `input` to `out` with replacements; stop where a match could
    /// still begin but the input ends (unless `last`). Answers how much
    /// of `input` was consumed and whether anything was replaced.
    fn scan(&self, input: &[u8], out: &mut BytesMut, last: bool) -> (usize, bool) {
        let mut matched = false;
        let mut copied = 0;
        let mut i = 0;
        'outer: while i < input.len() {
            let rest = &input[i..];
            for (from, to) in &self.pairs {
                if self.boundary && rest.starts_with(from) {
                    match rest.get(from.len()) {
                        // What follows decides: wait for it.
                        None if !last => {
                            out.extend_from_slice(&input[copied..i]);
                            return (i, matched);
                        }
                        Some(&c) if continues_segment(c) => continue,
                        _ => {}
                    }
                }
                if rest.starts_with(from) {
                    out.extend_from_slice(&input[copied..i]);
                    out.extend_from_slice(to);
                    i += from.len();
                    copied = i;
                    matched = true;
                    continue 'outer;
                }
                if !last && rest.len() < from.len() && from.starts_with(rest) {
                    // Might match once the next chunk is here.
                    out.extend_from_slice(&input[copied..i]);
                    return (i, matched);
                }
            }
            i += 1;
        }
        out.extend_from_slice(&input[copied..]);
        (input.len(), matched)
    }
}

/// Whether `c` may continue a URL segment (so that a root followed by it
/// is not that root).
fn continues_segment(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b".-_~%:@".contains(&c)
}

/// A [`Replace`] applied to a body chunk by chunk.
#[derive(Debug)]
pub struct Streaming {
    replace: Replace,
    /// The end of the last chunk that could begin a match.
    carry: Vec<u8>,
}

impl Streaming {
    /// The rewritten output that `chunk` makes final.
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(chunk.len() + self.carry.len());
        let input: std::borrow::Cow<'_, [u8]> = if self.carry.is_empty() {
            chunk.into()
        } else {
            let mut joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(chunk);
            joined.into()
        };
        let (done, _) = self.replace.scan(&input, &mut out, false);
        self.carry = input[done..].to_vec();
        debug_assert!(self.carry.len() <= self.replace.longest);
        out.freeze()
    }

    /// What is left once the body has ended.
    pub fn finish(&mut self) -> Bytes {
        let carry = std::mem::take(&mut self.carry);
        let mut out = BytesMut::with_capacity(carry.len());
        self.replace.scan(&carry, &mut out, true);
        out.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rep(pairs: &[(&str, &str)]) -> Replace {
        Replace::new(
            pairs
                .iter()
                .map(|(a, b)| (a.as_bytes().to_vec(), b.as_bytes().to_vec())),
        )
        .expect("something to replace")
    }

    #[test]
    fn replaces_every_match_longest_first() {
        let r = rep(&[("http://b", "http://p"), ("http://b/x", "X")]);
        assert_eq!(
            r.whole(b"<a>http://b/x/1</a><b>http://b/2</b>").as_deref(),
            Some(&b"<a>X/1</a><b>http://p/2</b>"[..])
        );
        assert_eq!(r.whole(b"nothing here"), None);
    }

    #[test]
    fn nothing_to_replace_is_none() {
        assert!(Replace::new(Vec::new()).is_none());
        assert!(Replace::new([(b"a".to_vec(), b"a".to_vec())]).is_none());
        assert!(Replace::new([(Vec::new(), b"a".to_vec())]).is_none());
    }

    #[test]
    fn a_match_split_across_chunks_is_found_and_only_a_short_tail_is_held() {
        let mut s = rep(&[("http://backend:1", "https://front")]).streaming();
        let mut out = Vec::new();
        out.extend_from_slice(&s.push(b"see http://bac"));
        // Only what could still be a match is held back.
        assert_eq!(out, b"see ");
        out.extend_from_slice(&s.push(b"kend:1/x and http://ba"));
        out.extend_from_slice(&s.finish());
        assert_eq!(out, b"see https://front/x and http://ba");
    }

    #[test]
    fn url_roots_match_only_whole() {
        let r = Replace::urls([(b"http://h:1000".to_vec(), b"https://p".to_vec())]).expect("r");
        assert_eq!(
            r.whole(b"a http://h:1000/x b http://h:10000/y c http://h:1000\"")
                .as_deref(),
            Some(&b"a https://p/x b http://h:10000/y c https://p\""[..])
        );
        let mut s = r.clone().streaming();
        let mut out = s.push(b"<u>http://h:1000").to_vec();
        out.extend_from_slice(&s.push(b"0/z</u>"));
        out.extend_from_slice(&s.finish());
        assert_eq!(out, b"<u>http://h:10000/z</u>");
    }

    proptest! {
        /// However the body is cut, streaming gives what the whole body
        /// gives.
        #[test]
        fn streaming_equals_whole(
            body in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'c')], 0..200),
            cuts in proptest::collection::vec(0usize..200, 0..8),
        ) {
            let mut r = rep(&[("abca", "Z"), ("ab", "yy"), ("cc", "")]);
            r.boundary = body.len() % 2 == 0;
            let expected = r.whole(&body).map(|b| b.to_vec()).unwrap_or_else(|| body.clone());
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(body.len())).collect();
            cuts.push(0);
            cuts.push(body.len());
            cuts.sort();
            let mut s = r.streaming();
            let mut got = Vec::new();
            for w in cuts.windows(2) {
                got.extend_from_slice(&s.push(&body[w[0]..w[1]]));
            }
            got.extend_from_slice(&s.finish());
            prop_assert_eq!(got, expected);
        }
    }
}
