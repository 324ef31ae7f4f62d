//! Text headers on arbitrary input: nothing panics, and the model holds:
//!
//! * arbitrary wire bytes as a frame's text header section decode to headers
//!   kept byte for byte (UTF-8 or not, SPEC §2.3), equal to `set_raw` of the
//!   same bytes; `iter()` yields only UTF-8 `name:value` pairs;
//! * a successful `append(name, value)` adds exactly one pair at the end of
//!   `iter()`: the name and value trimmed of spaces and tabs, earlier pairs
//!   unchanged; a failed one changes nothing;
//! * `remove(name)` removes exactly the pairs with that name;
//! * `get(name)` is the first pair with that name.
//!
//! Shared by the fuzz target `text_headers` and by `src/fuzz_replay.rs`,
//! which replays the saved inputs on stable.

use tofu::wire::{Decoded, Decoder, HEADER_LEN, encode_to_vec};
use tofu::{MAX_SECTION_LEN, Message, TextHeaders};

/// Checks one input; panics on a violation.
///
/// Input layout: segments separated by `0xFF` (never in UTF-8). The first is
/// the raw header section; the rest are `op+name`, `value` pairs.
pub(crate) fn run(data: &[u8]) {
    let mut segments = data.split(|&b| b == 0xFF);
    let raw = segments.next().unwrap_or_default();
    let Some(mut th) = decode_section(raw) else {
        return;
    };
    check_get(&th);

    while let Some(op_name) = segments.next() {
        let value = String::from_utf8_lossy(segments.next().unwrap_or_default());
        let Some((&op, name)) = op_name.split_first() else {
            continue;
        };
        let name = String::from_utf8_lossy(name);
        let before: Vec<(String, String)> = pairs(&th);
        match op % 3 {
            0 | 1 => {
                let old = th.clone();
                match th.append(&name, &value) {
                    Ok(()) => {
                        let after = pairs(&th);
                        assert_eq!(after.len(), before.len() + 1, "{th:?}");
                        assert_eq!(after[..before.len()], before[..]);
                        let blank = [' ', '\t'];
                        let last = (
                            name.trim_matches(blank).to_owned(),
                            value.trim_matches(blank).to_owned(),
                        );
                        assert_eq!(after[before.len()], last, "{th:?}");
                        assert!(th.byte_len() <= MAX_SECTION_LEN);
                    }
                    Err(_) => assert_eq!(th, old),
                }
            }
            _ => {
                let n = th.remove(&name);
                let key = name.trim_matches([' ', '\t']);
                let expect: Vec<_> = before.iter().filter(|(k, _)| k != key).cloned().collect();
                assert_eq!(before.len() - expect.len(), n);
                assert_eq!(pairs(&th), expect);
                assert_eq!(th.get(&name), None);
            }
        }
        check_get(&th);
    }
}

fn pairs(th: &TextHeaders) -> Vec<(String, String)> {
    th.iter()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

/// `get` finds the first pair of each name; `len` counts the pairs.
fn check_get(th: &TextHeaders) {
    let all = pairs(th);
    assert_eq!(th.len(), all.len());
    for (i, (n, v)) in all.iter().enumerate() {
        if all[..i].iter().all(|(m, _)| m != n) {
            assert_eq!(th.get(n), Some(v.as_str()));
        }
    }
}

/// Puts `raw` as the text header section of a Request frame and decodes it.
fn decode_section(raw: &[u8]) -> Option<TextHeaders> {
    let raw = &raw[..raw.len().min(MAX_SECTION_LEN)];
    let mut msg = Message::new();
    msg.text_headers
        .set_raw("x".repeat(raw.len()))
        .expect("fits");
    let mut frame = Vec::new();
    encode_to_vec(&msg, &mut frame).expect("encodes");
    frame[HEADER_LEN..HEADER_LEN + raw.len()].copy_from_slice(raw);
    let mut input = &frame[..];
    let got = Decoder::new().decode(&mut input, &mut || Some(Message::new()));
    let Ok(Decoded::Frame(decoded)) = got else {
        panic!("any text header section decodes: {got:?}");
    };
    let mut direct = TextHeaders::new();
    direct.set_raw(raw).expect("fits");
    assert_eq!(decoded.text_headers, direct);
    assert_eq!(decoded.text_headers.as_bytes(), raw);
    assert_eq!(
        decoded.text_headers.to_str().is_some(),
        std::str::from_utf8(raw).is_ok()
    );
    for (n, v) in decoded.text_headers.iter() {
        assert!(!n.is_empty() && !n.contains(':'), "{n:?}");
        assert!(!n.contains(['\r', '\n']) && !v.contains(['\r', '\n']));
    }
    Some(direct)
}
