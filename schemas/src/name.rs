//! Point names and subscription patterns.
//!
//! A name is a path of segments separated by `/`: `plant1/line2/pump3/speed`. A segment is not
//! empty, and holds no control character, no `*` and no `#`. `$sys/<node>/...` names carry the
//! status of the chain itself.
//!
//! A pattern is a name whose segments may be `*` (exactly one segment) or `**` (any number of
//! segments, none included): `plant1/**`, `plant1/*/speed`, `**`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest name or pattern accepted, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Most segments in a name or pattern.
pub const MAX_SEGMENTS: usize = 32;

/// Why a name or pattern was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NameError {
    /// The name or pattern is the empty string.
    #[error("empty name")]
    Empty,
    /// The name or pattern is longer, in bytes, than the limit that applies.
    #[error("name is {len} bytes long; the limit is {max}")]
    TooLong {
        /// The name's length in bytes.
        len: usize,
        /// The longest name allowed, in bytes.
        max: usize,
    },
    /// The name or pattern has more than [`MAX_SEGMENTS`] segments; carries the count.
    #[error("name has {0} segments; the limit is {MAX_SEGMENTS}")]
    TooManySegments(usize),
    /// The name or pattern starts or ends with `/`, or holds `//`; carries it (cut to 80 chars).
    #[error("name {0:?} has an empty segment (a leading, trailing or doubled '/')")]
    EmptySegment(String),
    /// A name holds a control character, `*` or `#` (a pattern: a control character or `#`).
    #[error("name {0:?} holds a character names may not hold (control characters, '*', '#')")]
    BadChar(String),
    /// A pattern segment holds `*` beside other characters (`pump*`, `***`).
    #[error("pattern {0:?}: '*' and '**' must stand alone as a whole segment")]
    BadWildcard(String),
    /// A pattern uses MQTT's wildcards (`+`, `#`) where pointhub's are meant.
    #[error("pattern {0:?} uses MQTT wildcards: write * for one segment and ** for any number (plant1/*/sine1, plant1/**)")]
    MqttWildcard(String),
}

/// Checks a point name; `max_len` is the configured limit (at most [`MAX_NAME_LEN`] by default).
pub fn validate_name(name: &str, max_len: usize) -> Result<(), NameError> {
    check_common(name, max_len)?;
    if name.chars().any(|c| c == '*' || c == '#' || c.is_control()) {
        return Err(NameError::BadChar(shorten(name)));
    }
    Ok(())
}

fn check_common(name: &str, max_len: usize) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > max_len {
        return Err(NameError::TooLong {
            len: name.len(),
            max: max_len,
        });
    }
    let segments = name.split('/').count();
    if segments > MAX_SEGMENTS {
        return Err(NameError::TooManySegments(segments));
    }
    if name.split('/').any(str::is_empty) {
        return Err(NameError::EmptySegment(shorten(name)));
    }
    Ok(())
}

fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Whether `name` lies inside namespace `ns` (`ns` itself or below it).
pub fn in_namespace(name: &str, ns: &str) -> bool {
    name == ns || (name.starts_with(ns) && name.as_bytes().get(ns.len()) == Some(&b'/'))
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Seg {
    Lit(String),
    One,
    Any,
}

/// A subscription pattern, parsed once and matched many times.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Pattern {
    text: String,
    segs: Vec<Seg>,
}

impl Pattern {
    /// Parses and checks a pattern of at most [`MAX_NAME_LEN`] bytes; `**/**` folds into `**`.
    pub fn parse(text: &str) -> Result<Pattern, NameError> {
        check_common(text, MAX_NAME_LEN)?;
        let mut segs = Vec::new();
        for s in text.split('/') {
            let seg = match s {
                "**" => Seg::Any,
                "*" => Seg::One,
                "+" | "#" => return Err(NameError::MqttWildcard(shorten(text))),
                s if s.contains('*') => return Err(NameError::BadWildcard(shorten(text))),
                s if s.chars().any(|c| c == '#' || c.is_control()) => {
                    return Err(NameError::BadChar(shorten(text)))
                }
                s => Seg::Lit(s.to_string()),
            };
            // `**/**` means the same as `**`: keep one, so matching stays linear.
            if seg == Seg::Any && segs.last() == Some(&Seg::Any) {
                continue;
            }
            segs.push(seg);
        }
        Ok(Pattern {
            text: text.to_string(),
            segs,
        })
    }

    /// The pattern as it was written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `name` matches. Allocates nothing and runs in O(segments of name × segments of
    /// pattern) at worst (a pattern has at most one `**` in a row, and a mismatch after a `**`
    /// moves that `**` on by one segment): the hub matches every point's name against new
    /// patterns on each subscribe.
    pub fn matches(&self, name: &str) -> bool {
        let end = name.len() + 1;
        // The name segment starting at byte `at`, and where the next one starts.
        let seg = |at: usize| -> (&str, usize) {
            let rest = &name[at..];
            let len = rest.find('/').unwrap_or(rest.len());
            (&rest[..len], at + len + 1)
        };
        let (mut p, mut at) = (0usize, 0usize);
        // The last `**` seen, and the name position it is tried against.
        let mut star: Option<(usize, usize)> = None;
        loop {
            if p == self.segs.len() && at >= end {
                return true;
            }
            if let Some(s) = self.segs.get(p) {
                match s {
                    Seg::Any => {
                        star = Some((p, at));
                        p += 1;
                        continue;
                    }
                    Seg::One if at < end => {
                        p += 1;
                        at = seg(at).1;
                        continue;
                    }
                    Seg::Lit(l) if at < end && seg(at).0 == l => {
                        p += 1;
                        at = seg(at).1;
                        continue;
                    }
                    _ => {}
                }
            }
            // A mismatch: let the last `**` take one more segment, if there is one left.
            match star {
                Some((sp, sat)) if sat < end => {
                    let next = seg(sat).1;
                    star = Some((sp, next));
                    p = sp + 1;
                    at = next;
                }
                _ => return false,
            }
        }
    }

    /// The literal prefix before the first wildcard (`plant1/line2` for `plant1/line2/**`).
    pub fn literal_prefix(&self) -> String {
        let mut out = Vec::new();
        for s in &self.segs {
            match s {
                Seg::Lit(l) => out.push(l.as_str()),
                _ => break,
            }
        }
        out.join("/")
    }
}

impl Pattern {
    /// `**`: every name.
    pub fn all() -> Pattern {
        Pattern {
            text: "**".into(),
            segs: vec![Seg::Any],
        }
    }
}

impl std::str::FromStr for Pattern {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::parse(s)
    }
}

impl TryFrom<String> for Pattern {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Pattern::parse(&s)
    }
}

impl From<Pattern> for String {
    fn from(p: Pattern) -> String {
        p.text
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({:?})", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, n: &str) -> bool {
        Pattern::parse(p).expect("valid pattern").matches(n)
    }

    /// The plain dynamic-programming matcher, as a reference for the fast one.
    fn reference(p: &Pattern, name: &str) -> bool {
        let parts: Vec<&str> = name.split('/').collect();
        let n = parts.len();
        let mut reach = vec![false; n + 1];
        reach[0] = true;
        for seg in &p.segs {
            let mut next = vec![false; n + 1];
            match seg {
                Seg::Any => {
                    let mut any = false;
                    for j in 0..=n {
                        any |= reach[j];
                        next[j] = any;
                    }
                }
                Seg::One => next[1..=n].copy_from_slice(&reach[..n]),
                Seg::Lit(l) => {
                    for j in 0..n {
                        next[j + 1] = reach[j] && parts[j] == l;
                    }
                }
            }
            reach = next;
        }
        reach[n]
    }

    #[test]
    fn the_fast_matcher_agrees_with_the_reference_on_every_small_case() {
        let segs = ["a", "b", "*", "**"];
        let names = [
            "a", "b", "a/b", "b/a", "a/a/b", "a/b/a/b", "b/b/b/a", "a/b/c",
        ];
        // Every pattern of up to four segments over {a, b, *, **}.
        let mut patterns = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = patterns
                .iter()
                .flat_map(|p| {
                    segs.iter().map(move |s| {
                        if p.is_empty() {
                            s.to_string()
                        } else {
                            format!("{p}/{s}")
                        }
                    })
                })
                .collect();
            patterns.extend(longer);
        }
        let mut checked = 0;
        for text in patterns.iter().filter(|p| !p.is_empty()) {
            let p = Pattern::parse(text).expect("valid");
            for n in names {
                assert_eq!(p.matches(n), reference(&p, n), "{text} vs {n}");
                checked += 1;
            }
        }
        assert!(checked > 2000);
    }

    #[test]
    fn wildcards() {
        assert!(m("plant1/**", "plant1/sim/sine1"));
        assert!(m("plant1/**", "plant1"));
        assert!(!m("plant1/**", "plant2/sim"));
        assert!(m("plant1/*/speed", "plant1/pump3/speed"));
        assert!(!m("plant1/*/speed", "plant1/a/b/speed"));
        assert!(m("**/speed", "a/b/c/speed"));
        assert!(m("**", "x"));
        assert!(m("a/**/b/**/c", "a/x/b/y/z/c"));
        assert!(!m("a/**/b/**/c", "a/x/c"));
        assert!(m("a/b", "a/b"));
        assert!(!m("a/b", "a/b/c"));
    }

    #[test]
    fn bad_names_and_patterns() {
        assert_eq!(validate_name("", 256), Err(NameError::Empty));
        assert!(matches!(
            validate_name("a//b", 256),
            Err(NameError::EmptySegment(_))
        ));
        assert!(matches!(
            validate_name("/a", 256),
            Err(NameError::EmptySegment(_))
        ));
        assert!(matches!(
            validate_name("a/*", 256),
            Err(NameError::BadChar(_))
        ));
        assert!(matches!(
            validate_name("a\nb", 256),
            Err(NameError::BadChar(_))
        ));
        assert!(matches!(
            validate_name(&"x".repeat(300), 256),
            Err(NameError::TooLong { .. })
        ));
        assert!(matches!(
            Pattern::parse("a/b*"),
            Err(NameError::BadWildcard(_))
        ));
        for mqtt in ["plant1/+/sine1", "plant1/#", "#"] {
            let e = Pattern::parse(mqtt).expect_err(mqtt);
            assert!(matches!(e, NameError::MqttWildcard(_)), "{mqtt}: {e}");
            assert!(e.to_string().contains("write * for one segment"), "{e}");
        }
        assert!(validate_name("$sys/edge1/connected", 256).is_ok());
    }

    #[test]
    fn many_double_stars_stay_fast() {
        let p = Pattern::parse(&["**"; 30].join("/")).expect("valid");
        assert!(p.matches(&["a"; 31].join("/")));
    }

    #[test]
    fn namespaces() {
        assert!(in_namespace("plant1/a", "plant1"));
        assert!(in_namespace("plant1", "plant1"));
        assert!(!in_namespace("plant10/a", "plant1"));
    }
}
