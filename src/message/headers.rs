//! Text headers: HTTP-like `name:value\r\n` lines (SPEC §2.3).

use std::fmt;

use crate::error::Error;

/// The most bytes text headers (or a body) may hold on the wire.
pub const MAX_SECTION_LEN: usize = u16::MAX as usize;

/// A message's text headers, stored exactly as they travel: `name:value\r\n` lines
/// in insertion order.
///
/// Names starting with `~` are reserved for the engine (`~connect_to`, `~listen_on`).
///
/// # Headers from the network
///
/// Text headers that arrive are kept byte for byte, whatever they hold (SPEC
/// §2.3): the original tofu checks nothing, so lines that are not UTF-8, lines
/// without `:`, empty lines and a last line without `\r\n` all arrive, and a
/// message echoed back (the same message posted again) sends them unchanged.
/// [`as_bytes`](TextHeaders::as_bytes) gives the section as received.
/// Reading by name ([`get`](TextHeaders::get), [`iter`](TextHeaders::iter),
/// [`len`](TextHeaders::len), [`remove`](TextHeaders::remove)) sees only the
/// well-formed lines: a line that is not UTF-8, has no `:` or has an empty
/// name is skipped, and iteration goes on with the next line. (The original's
/// iterator returns a line without `:` as a name with an empty value and
/// stops at an empty name; skipping both is what a reader by name expects.)
///
/// # Examples
///
/// ```
/// use tofu::TextHeaders;
///
/// let mut th = TextHeaders::new();
/// th.append(" Content-Type ", "text/plain")?;
/// assert_eq!(th.get("Content-Type"), Some("text/plain"));
/// assert_eq!(th.as_bytes(), b"Content-Type:text/plain\r\n");
/// assert!(th.append("", "x").is_err());
///
/// // As an original tofu peer may send them: kept, skipped when read by name.
/// th.set_raw(b"x-bin:\xff\xfe\r\nnocolon\r\nk:v")?;
/// assert_eq!(th.iter().collect::<Vec<_>>(), [("k", "v")]);
/// assert_eq!(th.as_bytes(), b"x-bin:\xff\xfe\r\nnocolon\r\nk:v");
/// assert_eq!(th.to_str(), None); // not UTF-8
/// # Ok::<(), tofu::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct TextHeaders {
    buf: Vec<u8>,
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

impl TextHeaders {
    /// Empty text headers.
    pub const fn new() -> TextHeaders {
        TextHeaders { buf: Vec::new() }
    }

    /// Appends `name:value\r\n`.
    ///
    /// Spaces and tabs around `name` are trimmed. If the text ends in an
    /// unterminated line (raw text from a peer or [`TextHeaders::set_raw`]),
    /// that line is ended with `\r\n` first.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidMessage`] for an empty name or value, a name containing `:`,
    /// or CR/LF inside either; [`Error::InvalidHeadersLen`] when the result would
    /// exceed 65535 bytes. On error nothing is appended.
    pub fn append(&mut self, name: &str, value: &str) -> Result<(), Error> {
        let name = name.trim_matches(is_blank);
        let bad = |s: &str| s.contains(['\r', '\n']);
        if name.is_empty() || value.trim_matches(is_blank).is_empty() {
            return Err(Error::InvalidMessage);
        }
        if bad(name) || bad(value) || name.contains(':') {
            return Err(Error::InvalidMessage);
        }
        // Raw text (from a peer, or `set_raw`) may end in an unterminated line:
        // end it first, or the new header would merge into it.
        let end_line: &[u8] = match self.buf.last() {
            None | Some(b'\n') => b"",
            Some(b'\r') => b"\n",
            Some(_) => b"\r\n",
        };
        let added = end_line.len() + name.len() + value.len() + 3;
        if self.buf.len() + added > MAX_SECTION_LEN {
            return Err(Error::InvalidHeadersLen);
        }
        self.buf.reserve(added);
        self.buf.extend_from_slice(end_line);
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(b':');
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// The value of the first header called `name` (exact match), trimmed of
    /// spaces and tabs. Lines that are not UTF-8 or not `name:value` are
    /// skipped.
    pub fn get(&self, name: &str) -> Option<&str> {
        let name = name.trim_matches(is_blank);
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Removes every header called `name`; returns how many were removed.
    /// Other lines, malformed ones included, stay as they are.
    pub fn remove(&mut self, name: &str) -> usize {
        let name = name.trim_matches(is_blank);
        let mut removed = 0;
        let mut kept = Vec::with_capacity(self.buf.len());
        for line in self.buf.split_inclusive(|&b| b == b'\n') {
            match split_line(line) {
                Some((n, _)) if n == name => removed += 1,
                _ => kept.extend_from_slice(line),
            }
        }
        if removed > 0 {
            self.buf.clear();
            self.buf.extend_from_slice(&kept);
        }
        removed
    }

    /// Iterates over `(name, value)` pairs in insertion order, names and
    /// values trimmed of spaces and tabs.
    ///
    /// Skips every line that is not a header: empty lines, lines that are not
    /// UTF-8, lines without `:` and lines with an empty name (see
    /// [Headers from the network](TextHeaders#headers-from-the-network)); they
    /// are still in [`as_bytes`](TextHeaders::as_bytes).
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            lines: self.buf.split(|&b| b == b'\n'),
        }
    }

    /// The number of headers ([`iter`](TextHeaders::iter) counts them).
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// `true` when there are no text header bytes at all.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Removes all headers, keeping the buffer's capacity.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// The raw text, as it travels on the wire, when it is UTF-8 (always, unless
    /// it came from the network or [`TextHeaders::set_raw`]).
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.buf).ok()
    }

    /// The raw bytes, as they travel on the wire: the section as posted, or as
    /// received from a peer, byte for byte.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The length in bytes on the wire.
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    /// Replaces the content with raw wire bytes (`name:value\r\n` lines, or
    /// anything else a peer might send). Nothing is validated beyond the
    /// length: the bytes travel as they are.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidHeadersLen`] when `raw` is longer than 65535 bytes.
    pub fn set_raw(&mut self, raw: impl AsRef<[u8]>) -> Result<(), Error> {
        let raw = raw.as_ref();
        if raw.len() > MAX_SECTION_LEN {
            return Err(Error::InvalidHeadersLen);
        }
        self.buf.clear();
        self.buf.extend_from_slice(raw);
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Empties the headers, keeping the buffer unless it grew past `keep`
    /// bytes (then it shrinks to `shrink`).
    pub(crate) fn clear_keep(&mut self, keep: usize, shrink: usize) {
        self.buf.clear();
        if self.buf.capacity() > keep {
            self.buf.shrink_to(shrink);
        }
    }

    pub(crate) fn take_buf(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn from_buf(buf: Vec<u8>) -> TextHeaders {
        TextHeaders { buf }
    }
}

/// One line as a `(name, value)` pair, or `None` when it is not one.
fn split_line(line: &[u8]) -> Option<(&str, &str)> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = std::str::from_utf8(line).ok()?;
    let (name, value) = line.split_once(':')?;
    let name = name.trim_matches(is_blank);
    if name.is_empty() {
        return None;
    }
    Some((name, value.trim_matches(is_blank)))
}

/// Iterator over `(name, value)` pairs, from [`TextHeaders::iter`].
#[derive(Clone)]
pub struct Iter<'a> {
    lines: std::slice::Split<'a, u8, fn(&u8) -> bool>,
}

impl fmt::Debug for Iter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Iter").finish_non_exhaustive()
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        for line in self.lines.by_ref() {
            if let Some(pair) = split_line(line) {
                return Some(pair);
            }
        }
        None
    }
}

impl<'a> IntoIterator for &'a TextHeaders {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// The pairs [`TextHeaders::iter`] reads; when the section is not UTF-8 or
/// holds lines that are not headers, also its bytes (escaped).
impl fmt::Debug for TextHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        m.entries(self.iter());
        let well_formed = self
            .buf
            .split(|&b| b == b'\n')
            .all(|l| l.is_empty() || l == b"\r" || split_line(l).is_some());
        if !well_formed {
            m.entry(&"raw", &self.buf.escape_ascii().to_string());
        }
        m.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_and_read() {
        let mut th = TextHeaders::new();
        th.append("a", "1").unwrap();
        th.append("\t b ", " two words ").unwrap();
        assert_eq!(th.as_bytes(), b"a:1\r\nb: two words \r\n");
        assert_eq!(th.get("b"), Some("two words"));
        assert_eq!(th.get("a"), Some("1"));
        assert_eq!(th.get("c"), None);
        assert_eq!(th.len(), 2);
        let all: Vec<_> = th.iter().collect();
        assert_eq!(all, vec![("a", "1"), ("b", "two words")]);
    }

    #[test]
    fn append_rejects_bad_input() {
        let mut th = TextHeaders::new();
        assert_eq!(th.append("", "v"), Err(Error::InvalidMessage));
        assert_eq!(th.append("  ", "v"), Err(Error::InvalidMessage));
        assert_eq!(th.append("n", ""), Err(Error::InvalidMessage));
        assert_eq!(th.append("n", " \t"), Err(Error::InvalidMessage));
        assert_eq!(th.append("n\r", "v"), Err(Error::InvalidMessage));
        assert_eq!(th.append("n", "v\nx:y"), Err(Error::InvalidMessage));
        assert_eq!(th.append("n:m", "v"), Err(Error::InvalidMessage));
        assert!(th.is_empty());
        // values may contain ':'
        th.append("~connect_to", "tcp|::1|80").unwrap();
        assert_eq!(th.get("~connect_to"), Some("tcp|::1|80"));
    }

    #[test]
    fn length_limit() {
        let mut th = TextHeaders::new();
        let big = "x".repeat(MAX_SECTION_LEN - 5);
        th.append("n", &big).unwrap(); // 1 + 1 + len + 2 = 65534
        assert_eq!(th.byte_len(), MAX_SECTION_LEN - 1);
        assert_eq!(th.append("m", "y"), Err(Error::InvalidHeadersLen));
        assert_eq!(th.byte_len(), MAX_SECTION_LEN - 1);
    }

    /// Found by the `text_headers` and `address` fuzz targets: appending to raw
    /// text whose last line had no line break merged the new header into that
    /// line (`x` + `~connect_to:…` read back as a header named `x~connect_to`).
    #[test]
    fn append_ends_an_unterminated_last_line() {
        for (raw, text) in [
            ("x", "x\r\nn:v\r\n"),
            ("a:1", "a:1\r\nn:v\r\n"),
            ("a:1\r", "a:1\r\nn:v\r\n"),
            ("a:1\n", "a:1\nn:v\r\n"),
            ("", "n:v\r\n"),
        ] {
            let mut th = TextHeaders::new();
            th.set_raw(raw).unwrap();
            th.append("n", "v").unwrap();
            assert_eq!(th.as_bytes(), text.as_bytes(), "after {raw:?}");
            assert_eq!(th.get("n"), Some("v"));
            assert_eq!(th.iter().last(), Some(("n", "v")));
        }
        // The line break counts towards the length limit.
        let mut th = TextHeaders::new();
        th.set_raw("x".repeat(MAX_SECTION_LEN - 6)).unwrap();
        assert_eq!(th.append("n", "v"), Err(Error::InvalidHeadersLen));
        assert_eq!(th.byte_len(), MAX_SECTION_LEN - 6);
        th.set_raw("x".repeat(MAX_SECTION_LEN - 7)).unwrap();
        th.append("n", "v").unwrap();
        assert_eq!(th.byte_len(), MAX_SECTION_LEN);
    }

    #[test]
    fn reading_skips_empty_and_malformed_lines() {
        let mut th = TextHeaders::new();
        th.set_raw("\r\nno-colon\r\n k :  v \r\n:empty-name\r\nlast:x")
            .unwrap();
        let all: Vec<_> = th.iter().collect();
        assert_eq!(all, vec![("k", "v"), ("last", "x")]);
    }

    #[test]
    fn remove_headers() {
        let mut th = TextHeaders::new();
        th.append("a", "1").unwrap();
        th.append("b", "2").unwrap();
        th.append("a", "3").unwrap();
        assert_eq!(th.remove("a"), 2);
        assert_eq!(th.as_bytes(), b"b:2\r\n");
        assert_eq!(th.remove("zz"), 0);
    }

    /// What `original-edges/case3-server-odd-text-headers` sends: every
    /// section is kept as it is; reading by name sees only the good lines.
    #[test]
    fn odd_sections_from_the_original_are_kept_and_read_around() {
        type Case = (&'static [u8], &'static [(&'static str, &'static str)]);
        let cases: [Case; 9] = [
            (b"x-bin:\xff\xfe\r\na", &[]),
            (b"\xff\xfe:\x80\r\n", &[]),
            (b"nocolon\r\n", &[]),
            (b"a:1\r\n\r\nb:2\r\n", &[("a", "1"), ("b", "2")]),
            (b"\r\n", &[]),
            (
                b":v\r\nk:after-empty-name\r\n",
                &[("k", "after-empty-name")],
            ),
            (b"k:no-crlf", &[("k", "no-crlf")]),
            (
                b"ok:1\r\nbad:\xc3\r\nok2:\xc3\xa9\r\n",
                &[("ok", "1"), ("ok2", "\u{e9}")],
            ),
            (b"", &[]),
        ];
        for (raw, pairs) in cases {
            let mut th = TextHeaders::new();
            th.set_raw(raw).unwrap();
            assert_eq!(th.as_bytes(), raw);
            assert_eq!(th.iter().collect::<Vec<_>>(), pairs, "{raw:?}");
            assert_eq!(th.len(), pairs.len());
            assert_eq!(th.to_str().is_some(), std::str::from_utf8(raw).is_ok());
            for (n, v) in pairs {
                assert_eq!(th.get(n), Some(*v));
            }
            let _ = format!("{th:?}"); // never panics
        }
        // Removing a good header leaves the odd lines alone.
        let mut th = TextHeaders::new();
        th.set_raw(b"\xff\r\nk:v\r\nnocolon\r\n").unwrap();
        assert_eq!(th.remove("k"), 1);
        assert_eq!(th.as_bytes(), b"\xff\r\nnocolon\r\n");
        // Appending after them works (the last line is ended first).
        th.set_raw(b"\xfe").unwrap();
        th.append("n", "v").unwrap();
        assert_eq!(th.as_bytes(), b"\xfe\r\nn:v\r\n");
        assert_eq!(th.get("n"), Some("v"));
    }
}
