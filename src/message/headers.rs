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
/// # Examples
///
/// ```
/// use tofu::TextHeaders;
///
/// let mut th = TextHeaders::new();
/// th.append(" Content-Type ", "text/plain")?;
/// assert_eq!(th.get("Content-Type"), Some("text/plain"));
/// assert_eq!(th.as_str(), "Content-Type:text/plain\r\n");
/// assert!(th.append("", "x").is_err());
/// # Ok::<(), tofu::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct TextHeaders {
    buf: String,
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

impl TextHeaders {
    /// Empty text headers.
    pub const fn new() -> TextHeaders {
        TextHeaders { buf: String::new() }
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
        let end_line = match self.buf.as_bytes().last() {
            None | Some(b'\n') => "",
            Some(b'\r') => "\n",
            Some(_) => "\r\n",
        };
        let added = end_line.len() + name.len() + value.len() + 3;
        if self.buf.len() + added > MAX_SECTION_LEN {
            return Err(Error::InvalidHeadersLen);
        }
        self.buf.reserve(added);
        self.buf.push_str(end_line);
        self.buf.push_str(name);
        self.buf.push(':');
        self.buf.push_str(value);
        self.buf.push_str("\r\n");
        Ok(())
    }

    /// The value of the first header called `name` (exact match), trimmed of
    /// spaces and tabs.
    pub fn get(&self, name: &str) -> Option<&str> {
        let name = name.trim_matches(is_blank);
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Removes every header called `name`; returns how many were removed.
    pub fn remove(&mut self, name: &str) -> usize {
        let name = name.trim_matches(is_blank);
        let mut removed = 0;
        let mut kept = String::with_capacity(self.buf.len());
        for line in self.buf.split_inclusive('\n') {
            match split_line(line) {
                Some((n, _)) if n == name => removed += 1,
                _ => kept.push_str(line),
            }
        }
        if removed > 0 {
            self.buf.clear();
            self.buf.push_str(&kept);
        }
        removed
    }

    /// Iterates over `(name, value)` pairs in insertion order, skipping empty or
    /// malformed lines.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            lines: self.buf.split('\n'),
        }
    }

    /// The number of headers.
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

    /// The raw text, as it travels on the wire.
    pub fn as_str(&self) -> &str {
        &self.buf
    }

    /// The raw bytes, as they travel on the wire.
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_bytes()
    }

    /// The length in bytes on the wire.
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    /// Replaces the content with raw wire text (`name:value\r\n` lines), as
    /// received from a peer. Nothing is validated beyond the length.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidHeadersLen`] when `raw` is longer than 65535 bytes.
    pub fn set_raw(&mut self, raw: &str) -> Result<(), Error> {
        if raw.len() > MAX_SECTION_LEN {
            return Err(Error::InvalidHeadersLen);
        }
        self.buf.clear();
        self.buf.push_str(raw);
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    pub(crate) fn take_buf(&mut self) -> String {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn from_buf(buf: String) -> TextHeaders {
        TextHeaders { buf }
    }
}

fn split_line(line: &str) -> Option<(&str, &str)> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    let (name, value) = line.split_once(':')?;
    let name = name.trim_matches(is_blank);
    if name.is_empty() {
        return None;
    }
    Some((name, value.trim_matches(is_blank)))
}

/// Iterator over `(name, value)` pairs, from [`TextHeaders::iter`].
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    lines: std::str::Split<'a, char>,
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

impl fmt::Debug for TextHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
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
        assert_eq!(th.as_str(), "a:1\r\nb: two words \r\n");
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
            assert_eq!(th.as_str(), text, "after {raw:?}");
            assert_eq!(th.get("n"), Some("v"));
            assert_eq!(th.iter().last(), Some(("n", "v")));
        }
        // The line break counts towards the length limit.
        let mut th = TextHeaders::new();
        th.set_raw(&"x".repeat(MAX_SECTION_LEN - 6)).unwrap();
        assert_eq!(th.append("n", "v"), Err(Error::InvalidHeadersLen));
        assert_eq!(th.byte_len(), MAX_SECTION_LEN - 6);
        th.set_raw(&"x".repeat(MAX_SECTION_LEN - 7)).unwrap();
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
        assert_eq!(th.as_str(), "b:2\r\n");
        assert_eq!(th.remove("zz"), 0);
    }
}
