//! The channel-core fuzz driver: arbitrary bytes become a script of
//! application actions and transport events on a [`Pair`], and every step is
//! checked against a model of what must hold.
//!
//! Invariants checked:
//! * nothing panics (also when hello, bye and idle timeouts fire, or a side writes
//!   a ByeSignal frame as the original does);
//! * every posted message ends exactly once: written completely, or given
//!   back (`origin = Engine`) — and, while the channel is open, the core
//!   holds exactly the messages the model says are queued;
//! * what a peer delivers is valid (it re-encodes to a frame the codec
//!   accepts, carries the receiver's channel number and the application
//!   origin) and, unless the test corrupted that direction, is exactly the
//!   sequence the other side wrote, in order;
//! * once everything is dropped, no pool message is left outstanding.

use std::collections::VecDeque;

use crate::message::{Message, OpCode, Origin, Pool};
use crate::wire::{self, FrameHeader, HEADER_LEN};

use super::End;
use super::channel::Posted;
use super::pair::{CLIENT, Pair, SERVER, Side};

/// Ops run per input at most.
const MAX_OPS: usize = 4096;

const POSTABLE: [OpCode; 7] = [
    OpCode::Request,
    OpCode::Response,
    OpCode::Signal,
    OpCode::HelloResponse,
    OpCode::ByeRequest,
    OpCode::ByeResponse,
    OpCode::ByeSignal,
];

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
}

/// What the model knows about one side.
#[derive(Default)]
struct Model {
    /// Ids queued in the core, oldest first.
    queued: VecDeque<u64>,
    /// Ids completely written, in order.
    written: Vec<u64>,
    /// Ids that ended (written or given back).
    ended: Vec<u64>,
    /// A post that was given back without being queued.
    refused: Option<u64>,
    /// Deliveries checked so far (index into the peer's `delivered`).
    checked: usize,
    /// Frames from the other side checked against its `written`.
    received: usize,
    /// The other side's byte stream into this one was tampered with.
    corrupted: bool,
    /// The HelloRequest arrived (the application knows the channel).
    greeted: bool,
}

struct Driver {
    pair: Pair,
    models: [Model; 2],
    next_id: u64,
}

fn index(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
    }
}

impl Driver {
    fn new(client_pool: usize, server_pool: usize) -> Driver {
        let mut models: [Model; 2] = Default::default();
        models[0].queued.push_back(Pair::HELLO_ID);
        Driver {
            // With an idle timeout too, so that its deadline is driven by
            // the same scripts as the hello and bye timeouts.
            pair: Pair::with_timeouts(
                client_pool,
                server_pool,
                super::Timeouts {
                    idle: Some(std::time::Duration::from_secs(5)),
                    ..super::Timeouts::default()
                },
            ),
            models,
            next_id: 1_000_000,
        }
    }

    fn post(&mut self, side: Side, op: OpCode, body_len: usize, more: bool) {
        let m = &self.models[index(side)];
        let peer = self.pair.peer(side);
        if peer.closed.is_some() || (side == Side::Server && !m.greeted) {
            return; // the application cannot post here
        }
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = peer.message(op, id, &vec![0x5a; body_len]);
        if more && op.is_regular() {
            msg.header.proto.more = crate::message::More::More;
        }
        let posted = peer.post(msg);
        let model = &mut self.models[index(side)];
        match posted {
            Posted::Queued => model.queued.push_back(id),
            Posted::GivenBack | Posted::Close(_) => model.refused = Some(id),
        }
    }

    fn write(&mut self, side: Side, limit: usize) {
        let peer = self.pair.peer(side);
        let before = peer.frames_written;
        peer.write(limit);
        let done = peer.frames_written - before;
        let model = &mut self.models[index(side)];
        for _ in 0..done {
            let id = model
                .queued
                .pop_front()
                .expect("written frames were queued");
            model.written.push(id);
            model.ended.push(id);
        }
    }

    /// Checks every new delivery of `side`.
    fn check(&mut self, side: Side) {
        let me = index(side);
        let number = match side {
            Side::Client => CLIENT,
            Side::Server => SERVER,
        };
        let delivered = &self.pair.peer(side).delivered;
        let (mine, theirs) = if me == 0 {
            let (a, b) = self.models.split_at_mut(1);
            (&mut a[0], &b[0])
        } else {
            let (a, b) = self.models.split_at_mut(1);
            (&mut b[0], &a[0])
        };
        for msg in &delivered[mine.checked..] {
            let id = msg.header.message_id;
            match msg.header.proto.origin {
                Origin::Engine => {
                    // A message of ours, given back: exactly once.
                    assert!(!mine.ended.contains(&id), "{id} ended twice");
                    if mine.queued.front() == Some(&id) {
                        mine.queued.pop_front();
                    } else {
                        assert_eq!(mine.refused.take(), Some(id), "given back out of order");
                    }
                    mine.ended.push(id);
                }
                Origin::Application => {
                    assert_eq!(msg.channel_number(), number);
                    valid_frame(msg);
                    if msg.opcode() == OpCode::HelloRequest {
                        mine.greeted = true;
                    }
                    if !mine.corrupted {
                        assert_eq!(
                            theirs.written.get(mine.received),
                            Some(&id),
                            "frame {} from the peer out of order",
                            mine.received
                        );
                    }
                    mine.received += 1;
                }
            }
        }
        mine.checked = delivered.len();
        let peer = &self.pair.peer(side);
        let held = if peer.closed.is_some() {
            0
        } else {
            peer.core.stashed()
        };
        assert_eq!(
            peer.budget.used(),
            held,
            "the budget counts exactly the stash"
        );
        match peer.closed {
            None => assert_eq!(
                peer.core.queued(),
                mine.queued.len(),
                "core and model agree"
            ),
            Some(close) => {
                assert_eq!(peer.core.queued(), 0);
                if close.report {
                    assert!(mine.queued.is_empty(), "unsent messages not given back");
                } else {
                    // A silent close: the application never saw the channel,
                    // so it never posted on it.
                    assert!(!mine.greeted || mine.queued.is_empty());
                    mine.queued.clear();
                }
            }
        }
    }

    fn consume(&mut self, side: Side) {
        let delivered = self.pair.peer(side).take_delivered();
        assert_eq!(delivered.len(), self.models[index(side)].checked);
        self.models[index(side)].checked = 0;
    }
}

/// Re-encodes a delivered frame and decodes its header again.
fn valid_frame(msg: &Message) {
    let mut bytes = Vec::new();
    wire::encode_to_vec(msg, &mut bytes).expect("sections fit");
    let header: &[u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().expect("16 bytes");
    let fh = FrameHeader::decode(header).expect("a delivered frame is valid");
    assert!(wire::may_arrive(fh.header.proto.opcode));
}

/// Runs one fuzz input against a pair of channel cores; panics on a
/// violated invariant (see the module docs).
pub(crate) fn run(data: &[u8]) {
    let mut input = Bytes(data);
    let pools = input.byte().unwrap_or(0x88);
    let (client_pool, server_pool) = (1 + (pools >> 4) as usize, 1 + (pools & 15) as usize);
    let client_pool_handle: Pool;
    let server_pool_handle: Pool;
    {
        let mut d = Driver::new(client_pool, server_pool);
        client_pool_handle = d.pair.client.pool.clone();
        server_pool_handle = d.pair.server.pool.clone();
        for _ in 0..MAX_OPS {
            let Some(op) = input.byte() else { break };
            let arg = input.byte().unwrap_or(0);
            let side = if op & 0x80 == 0 {
                Side::Client
            } else {
                Side::Server
            };
            match op & 0x7f {
                0..=29 => {
                    let kind = POSTABLE[(arg % 7) as usize];
                    let body = (input.byte().unwrap_or(0) as usize) * 7;
                    d.post(side, kind, body, arg & 0x80 != 0);
                }
                30..=44 => {
                    let limit = if arg == 255 {
                        usize::MAX
                    } else {
                        1 + arg as usize * 3
                    };
                    d.write(side, limit);
                }
                45..=64 => {
                    let max = if arg == 0 {
                        usize::MAX
                    } else {
                        arg as usize * 5
                    };
                    let chunk = 1 + input.byte().unwrap_or(255) as usize * 17;
                    d.pair.transfer(side, max, chunk);
                }
                65..=69 => {
                    // Bytes the peer never sent (or a truncated stream).
                    let n = 1 + arg as usize % 32;
                    let junk = input.take(n).to_vec();
                    let peer = d.pair.peer(side);
                    if arg & 0x80 != 0 {
                        let keep = peer.pipe.len().saturating_sub(n);
                        peer.pipe.truncate(keep);
                    } else {
                        peer.pipe.extend(junk);
                    }
                    d.models[index(side.other())].corrupted = true;
                }
                70..=79 => d.consume(side),
                80..=84 => {
                    d.pair.peer(side).resume();
                }
                85..=87 => {
                    if d.pair.peer(side).closed.is_none() {
                        let end = [End::Eof, End::Disconnect, End::Failed][arg as usize % 3];
                        d.pair.peer(side).end(end);
                    }
                }
                88..=95 => {
                    // Answer the HelloRequest (the usual server reaction).
                    if side == Side::Server {
                        d.post(side, OpCode::HelloResponse, 0, false);
                    }
                }
                96..=99 => {
                    // Time passes: hello, bye and idle timeouts may fire.
                    d.pair
                        .advance(std::time::Duration::from_millis(u64::from(arg) * 100));
                }
                100..=103 => {
                    // The original's abort: a well-formed ByeSignal frame
                    // from this side (SPEC §3), not one its core wrote.
                    let mut abort = Message::new();
                    abort.header.proto.opcode = OpCode::ByeSignal;
                    abort.header.message_id = u64::from(arg);
                    let mut bytes = Vec::new();
                    wire::encode_to_vec(&abort, &mut bytes).expect("fits");
                    d.pair.peer(side).pipe.extend(bytes);
                    d.models[index(side.other())].corrupted = true;
                }
                _ => {
                    // Let everything move.
                    for s in [Side::Client, Side::Server] {
                        d.write(s, usize::MAX);
                    }
                    d.pair.client.resume();
                    d.pair.server.resume();
                    d.pair.transfer(Side::Client, usize::MAX, 4096);
                    d.pair.transfer(Side::Server, usize::MAX, 4096);
                }
            }
            d.check(Side::Client);
            d.check(Side::Server);
        }
        d.check(Side::Client);
        d.check(Side::Server);
    }
    // Everything is dropped: every pool message came home.
    assert_eq!(client_pool_handle.outstanding(), 0, "client pool leaked");
    assert_eq!(server_pool_handle.outstanding(), 0, "server pool leaked");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random script (xorshift), so the driver runs
    /// in every test build, not only under the fuzzer.
    fn script(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn the_driver_holds_on_pseudo_random_scripts() {
        let seeds = if cfg!(miri) { 3 } else { 300 };
        for seed in 0..seeds {
            run(&script(seed, 2000));
        }
    }

    #[test]
    fn the_driver_holds_on_a_plain_conversation() {
        // pools 16/16; client posts three Signals, everything moves, the
        // server answers the hello and aborts.
        let mut s = vec![0xff];
        for _ in 0..3 {
            s.extend([0, 2, 10]);
        }
        s.extend([120, 0, 0x80 | 88, 0, 120, 0, 0x80, 6, 0, 120, 0]);
        run(&s);
    }
}
