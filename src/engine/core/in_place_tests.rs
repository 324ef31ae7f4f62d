//! Large bodies read in place (straight into their message, no copy out of
//! the read buffer), deterministically: two cores over byte pipes
//! ([`Pair`]), whose reads go into a large body first as the reactor's do.

use super::pair::{Pair, Side};
use super::recv::DIRECT_MIN;
use crate::message::{Message, OpCode};

/// A body whose every byte depends on the message and its place.
fn body(id: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u64 * 31 + id * 7) as u8).collect()
}

fn post(p: &mut Pair, id: u64, len: usize, text: Option<(&str, &str)>) {
    let mut m = p.client.message(OpCode::Signal, id, &body(id, len));
    if let Some((k, v)) = text {
        m.text_headers.append(k, v).unwrap();
    }
    p.client.post(m);
}

/// Bodies around and far above the threshold, one with text headers, read
/// in pieces of every kind of size: each arrives whole, byte for byte, and
/// the large ones went (partly) straight into their messages.
#[test]
fn large_bodies_read_in_place_arrive_intact() {
    let sizes = [65535, DIRECT_MIN, DIRECT_MIN - 1, 20_000, 3, 40_000];
    for chunk in [1000, 7777, DIRECT_MIN + 5, 65536, 1 << 20] {
        let mut p = Pair::connected(8);
        for (i, &len) in sizes.iter().enumerate() {
            let text = (i == 5).then_some(("k", "v"));
            post(&mut p, i as u64 + 1, len, text);
        }
        p.client.write_all();
        p.transfer(Side::Client, usize::MAX, chunk);
        let got = p.server.take_delivered();
        assert_eq!(got.len(), sizes.len(), "chunk {chunk}");
        for (i, (m, &len)) in got.iter().zip(&sizes).enumerate() {
            let id = i as u64 + 1;
            assert_eq!(m.header.message_id, id);
            assert!(m.body == body(id, len), "chunk {chunk}: body {id} differs");
        }
        assert_eq!(got[5].text_headers.get("k"), Some("v"));
        if chunk < 65535 {
            assert!(p.server.direct_reads > 0, "chunk {chunk}: nothing in place");
        }
    }
}

/// A message back in the pool keeps its old body's bytes (so that the next
/// large body needs no zeroing), but none of them leak: a shorter body and
/// then a longer one, decoded into the same recycled message, hold exactly
/// their own bytes.
#[test]
fn a_recycled_message_holds_only_its_new_body() {
    let mut p = Pair::connected(2);
    for (id, len) in [(1, 60_000), (2, 30_000), (3, 50_000), (4, 5)] {
        post(&mut p, id, len, None);
        p.client.write_all();
        p.transfer(Side::Client, usize::MAX, 4096);
        let got: Vec<Message> = p.server.take_delivered();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body.len(), len);
        assert!(got[0].body == body(id, len), "body {id} differs");
        // Back into the server's pool of two for the next one.
    }
}

/// Bodies under the threshold are never read in place: a read of their own
/// would cost more than the copy.
#[test]
fn small_bodies_are_copied() {
    let mut p = Pair::connected(8);
    for id in 1..=4 {
        post(&mut p, id, DIRECT_MIN - 1, None);
    }
    p.client.write_all();
    p.transfer(Side::Client, usize::MAX, 1000);
    assert_eq!(p.server.take_delivered().len(), 4);
    assert_eq!(p.server.direct_reads, 0);
}
