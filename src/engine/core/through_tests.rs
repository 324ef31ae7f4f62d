//! The write-through path (a batch posted inline, SPEC §7): small frames
//! encoded straight into the write buffer, deterministically — two cores
//! over byte pipes ([`Pair`]), writes cut at every byte.

use super::channel::Posted;
use super::pair::Pair;
use super::send::COALESCE_MAX_FRAME;
use super::{Cause, End};
use crate::error::Status;
use crate::message::{Message, OpCode};
use crate::wire;

fn signals(p: &mut Pair, ids: std::ops::Range<u64>) -> Vec<Message> {
    ids.map(|id| {
        p.client.message(
            OpCode::Signal,
            id,
            &id.to_be_bytes().repeat(id as usize % 3),
        )
    })
    .collect()
}

fn ids(msgs: &[Message]) -> Vec<u64> {
    msgs.iter().map(|m| m.header.message_id).collect()
}

/// Three frames written through, the write cut at every byte: the peer
/// gets the same bytes as from the queue, every frame once and in order;
/// what the socket did not take is queued with the cursor inside its
/// frame, and each frame is released from the outgoing limits once, when
/// it is written whole.
#[test]
fn a_write_through_cut_anywhere_loses_and_repeats_nothing() {
    let total: usize = {
        let mut p = Pair::connected(8);
        signals(&mut p, 1..4)
            .iter()
            .map(|m| {
                let mut v = Vec::new();
                wire::encode_to_vec(m, &mut v).unwrap();
                v.len()
            })
            .sum()
    };
    for cut in 0..=total {
        let mut p = Pair::connected(8);
        assert!(p.client.core.may_write_through());
        let msgs = signals(&mut p, 1..4);
        let before = p.client.frames_written; // the HelloRequest
        assert_eq!(p.client.post_through(msgs, cut), cut);
        let whole = p.client.frames_written - before;
        let through = p.client.core.take_released();
        assert_eq!(through.messages, whole, "cut {cut}");
        assert_eq!(
            p.client.core.may_write_through(),
            cut == total,
            "anything left is queued (cut {cut})"
        );
        p.settle();
        assert_eq!(p.client.frames_written - before, 3);
        let queued = p.client.core.take_released();
        assert_eq!(through.messages + queued.messages, 3, "cut {cut}");
        assert_eq!(through.bytes + queued.bytes, total, "cut {cut}");
        let got = p.server.take_delivered();
        assert_eq!(ids(&got), [1, 2, 3], "cut {cut}");
        for m in &got {
            let id = m.header.message_id;
            assert_eq!(m.body, id.to_be_bytes().repeat(id as usize % 3));
        }
        assert!(p.client.take_delivered().is_empty(), "nothing came back");
    }
}

/// The path stops at a message it does not take — a ByeRequest, a frame
/// over the copy limit — which then takes the queue, behind what was
/// written through: order holds, and after the ByeRequest nothing more is
/// sent (the Signal after it comes back, as from `post`).
#[test]
fn a_bye_or_a_large_frame_ends_the_write_through_in_order() {
    let mut p = Pair::connected(8);
    let big = vec![7u8; COALESCE_MAX_FRAME];
    let msgs = vec![
        p.client.message(OpCode::Signal, 1, b"a"),
        p.client.message(OpCode::Signal, 2, &big),
        p.client.message(OpCode::Signal, 3, b"c"),
        p.client.message(OpCode::ByeRequest, 4, b""),
        p.client.message(OpCode::Signal, 5, b"e"),
    ];
    let written = p.client.post_through(msgs, usize::MAX);
    assert_eq!(written, wire::HEADER_LEN + 1, "only the first went through");
    assert!(!p.client.core.may_write_through());
    let back = p.client.take_delivered();
    assert_eq!(ids(&back), [5]);
    assert_eq!(back[0].status(), Status::NotAllowed);
    p.settle();
    let got = p.server.take_delivered();
    assert_eq!(ids(&got), [1, 2, 3, 4]);
    assert_eq!(got[1].body, big);
}

/// A ByeSignal is never written through: it aborts the channel, which gives
/// back what was queued behind a partial write-through.
#[test]
fn an_abort_after_a_partial_write_through_gives_the_rest_back() {
    let mut p = Pair::connected(8);
    let mut msgs = signals(&mut p, 1..4);
    msgs.push(p.client.message(OpCode::ByeSignal, 9, b""));
    // The first frame whole (id 1: an 8-byte body), the second cut.
    let first = wire::HEADER_LEN + 8;
    p.client.post_through(msgs, first + 3);
    let close = p.client.closed.expect("the ByeSignal closed the channel");
    assert_eq!(close.cause, Cause::Abort);
    let back = p.client.take_delivered();
    // The ByeSignal comes back as it does from `post`, then the cut frame
    // and the one after it.
    assert_eq!(ids(&back), [9, 2, 3]);
    assert!(back.iter().all(|m| m.status() == Status::ChannelClosed));
}

/// A write that fails after part of a write-through (the peer vanished):
/// the frames not written whole come back with the failure's status.
#[test]
fn a_failed_write_gives_back_what_was_not_written() {
    let mut p = Pair::connected(8);
    let msgs = signals(&mut p, 1..5);
    // Frame 1 whole (an 8-byte body), frame 2 cut.
    let cut = wire::HEADER_LEN + 8 + 2;
    p.client.post_through(msgs, cut);
    p.client.end(End::Disconnect);
    let back = p.client.take_delivered();
    let statuses: Vec<_> = back.iter().map(|m| m.status()).collect();
    assert_eq!(ids(&back[..3]), [2, 3, 4]);
    assert_eq!(statuses[..3], [Status::PeerDisconnected; 3]);
}

/// Only an open channel with nothing queued and no Bye posted writes
/// through.
#[test]
fn only_an_idle_open_channel_writes_through() {
    let p = Pair::new(8);
    assert!(!p.client.core.may_write_through(), "not connected yet");
    let mut p = Pair::connected(8);
    assert!(p.client.core.may_write_through());
    let m = p.client.message(OpCode::Signal, 1, b"x");
    assert_eq!(p.client.post(m), Posted::Queued);
    assert!(!p.client.core.may_write_through(), "a frame is queued");
    p.settle();
    assert!(p.client.core.may_write_through());
    let bye = p.client.message(OpCode::ByeRequest, 2, b"");
    assert_eq!(p.client.post(bye), Posted::Queued);
    p.client.write_all();
    assert!(!p.client.core.may_write_through(), "a Bye was posted");
}

/// A run longer than one write goes out in writes of at most `max` bytes
/// (the reactor's limit for a Unix-domain socket on Linux), each frame
/// whole in one of them. A write the socket takes only in part ends the
/// run: the rest is queued behind the cursor, and the peer gets every
/// frame once and in order.
#[test]
fn a_long_run_goes_out_in_writes_of_at_most_max_bytes() {
    let frame = wire::HEADER_LEN + 64;
    let max = 1000; // 12 frames a write
    for cut in [None, Some(0), Some(1), Some(frame), Some(250)] {
        let mut p = Pair::connected(256);
        let msgs: Vec<Message> = (1..=100u64)
            .map(|id| p.client.message(OpCode::Signal, id, &[id as u8; 64]))
            .collect();
        let limits = match cut {
            None => vec![],
            Some(c) => vec![usize::MAX, usize::MAX, c],
        };
        let writes = p.client.post_through_in(msgs, max, &limits);
        assert!(writes.iter().all(|&n| n <= max), "{writes:?}");
        // Released once each: those written whole now, the others when
        // the queue has written them.
        let through = p.client.core.take_released();
        assert_eq!(through.messages, writes.iter().sum::<usize>() / frame);
        match cut {
            None => {
                // 100 frames, 12 a write.
                assert_eq!(writes.len(), 9);
                assert!(writes[..8].iter().all(|&n| n == 12 * frame));
                assert_eq!(writes.iter().sum::<usize>(), 100 * frame);
                assert!(p.client.core.may_write_through(), "nothing queued");
            }
            Some(c) => {
                assert_eq!(writes, [12 * frame, 12 * frame, c]);
                assert!(!p.client.core.may_write_through(), "the rest queued");
            }
        }
        p.settle();
        let queued = p.client.core.take_released();
        assert_eq!(through.messages + queued.messages, 100, "cut {cut:?}");
        let got = p.server.take_delivered();
        assert_eq!(ids(&got), (1..=100).collect::<Vec<_>>(), "cut {cut:?}");
        assert!(
            got.iter()
                .all(|m| m.body == [m.header.message_id as u8; 64])
        );
        assert!(p.client.take_delivered().is_empty(), "nothing came back");
    }
}
