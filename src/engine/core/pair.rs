//! Two channel cores back to back over in-memory byte pipes: the harness for
//! the deterministic tests and the `channel` fuzz target.
//!
//! No sockets, no threads, no clock. A test decides every step: how many
//! bytes a write may take (partial writes at any offset), how many bytes of
//! the pipe a read gets (splits anywhere), what to hold back, truncate,
//! corrupt or reset. Each [`Peer`] has its own pool, so a tiny pool starves
//! exactly when the test says.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::message::{Message, OpCode, Pool};

use super::backpressure::{self, StashBudget};
use super::channel::{ChannelCore, Posted};
use super::send::IoVec;
use super::{Close, End, Flow, Timeouts};

/// The harness's read buffer length (the reactor's default `read_chunk`).
const READ_BUF: usize = 64 * 1024;

/// The client's channel number in a [`Pair`].
pub(crate) const CLIENT: u16 = 1;
/// The server's channel number in a [`Pair`].
pub(crate) const SERVER: u16 = 7;

/// Which end of a [`Pair`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

impl Side {
    pub(crate) fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

/// One end: a core, its pool, the bytes it wrote that the other end has not
/// read yet, and what it delivered to its application.
pub(crate) struct Peer {
    pub(crate) core: ChannelCore,
    pub(crate) pool: Pool,
    /// Written by this peer, not yet read by the other.
    pub(crate) pipe: VecDeque<u8>,
    /// Messages the core gave its group, in order (frames read and messages
    /// given back). Holding them keeps their pool messages out of the pool.
    pub(crate) delivered: Vec<Message>,
    pub(crate) closed: Option<Close>,
    /// Reading stopped for want of pool messages.
    pub(crate) starved: bool,
    /// Frames completely written so far.
    pub(crate) frames_written: usize,
    /// This peer's clock: only [`Pair::advance`] moves it.
    pub(crate) now: Instant,
    /// This peer's engine-wide stash budget (one channel here).
    pub(crate) budget: StashBudget,
    /// Reads that went (partly) straight into a large body.
    pub(crate) direct_reads: u64,
}

impl Peer {
    fn new(core: ChannelCore, pool_size: usize, now: Instant) -> Peer {
        Peer {
            core,
            pool: Pool::new(pool_size, pool_size),
            pipe: VecDeque::new(),
            delivered: Vec::new(),
            closed: None,
            starved: false,
            frames_written: 0,
            now,
            budget: StashBudget::new(usize::MAX / 2),
            direct_reads: 0,
        }
    }

    /// A message from this peer's pool (or a new one when it is empty).
    pub(crate) fn message(&self, op: OpCode, id: u64, body: &[u8]) -> Message {
        let mut m = self
            .pool
            .get(crate::message::Allocation::Always)
            .expect("Always gives a message");
        m.header.channel_number = self.core.number();
        m.header.proto.opcode = op;
        m.header.message_id = id;
        m.body.extend_from_slice(body);
        m
    }

    /// Posts `msg` as the application would.
    pub(crate) fn post(&mut self, msg: Message) -> Posted {
        assert!(self.closed.is_none(), "post on a closed channel");
        let posted = self.core.handle_post(msg, self.now);
        self.collect();
        if let Posted::Close(close) = posted {
            self.close(close);
        }
        posted
    }

    /// One write that takes at most `limit` bytes; returns the bytes written.
    pub(crate) fn write(&mut self, limit: usize) -> usize {
        if self.closed.is_some() {
            return 0;
        }
        let mut iov = IoVec::new();
        self.core.poll_transmit(&mut iov);
        let mut n = 0;
        for slice in iov.as_slices() {
            let take = slice.len().min(limit - n);
            self.pipe.extend(&slice[..take]);
            n += take;
            if n == limit {
                break;
            }
        }
        self.frames_written += self.core.handle_written(n, &mut Vec::new());
        n
    }

    /// Posts `msgs` as the reactor's write-through path does (a batch
    /// posted inline): while the channel may write through, each small
    /// frame is encoded into one buffer, of which one write takes at most
    /// `limit` bytes; a message the path does not take (and every one
    /// after it) is posted as by [`post`](Self::post). Returns the bytes
    /// written through.
    #[cfg(test)]
    pub(crate) fn post_through(&mut self, msgs: Vec<Message>, limit: usize) -> usize {
        self.post_through_in(msgs, usize::MAX, &[limit])
            .first()
            .copied()
            .unwrap_or(0)
    }

    /// As the reactor does it (`reactor/through.rs`): the run goes out in
    /// writes of at most `max` bytes; the `i`-th write takes at most
    /// `limits[i]` bytes (all of them past the end of `limits`), and one
    /// not taken whole ends the run. What is not written through is posted
    /// as by [`post`](Self::post). Returns the bytes each write took.
    #[cfg(test)]
    pub(crate) fn post_through_in(
        &mut self,
        msgs: Vec<Message>,
        max: usize,
        limits: &[usize],
    ) -> Vec<usize> {
        assert!(self.closed.is_none(), "post on a closed channel");
        let mut written = Vec::new();
        let mut msgs = msgs;
        let mut rest = msgs.drain(..);
        while !rest.as_slice().is_empty() && self.core.may_write_through() {
            let (mut buf, mut held) = (Vec::new(), Vec::new());
            let run_over = self.core.encode_write(&mut rest, &mut buf, &mut held, max);
            if held.is_empty() {
                break;
            }
            let limit = limits.get(written.len()).copied().unwrap_or(usize::MAX);
            let n = buf.len().min(limit);
            self.pipe.extend(&buf[..n]);
            self.frames_written += self.core.handle_written_through(n, &mut held, 0);
            self.collect();
            written.push(n);
            if n < buf.len() || run_over {
                break;
            }
        }
        for msg in rest {
            if self.closed.is_some() {
                break;
            }
            self.post(msg);
        }
        written
    }

    /// Writes until nothing is left to write.
    #[cfg(test)]
    pub(crate) fn write_all(&mut self) {
        while self.core.wants_write() && self.closed.is_none() {
            self.write(usize::MAX);
        }
    }

    /// Whether the reactor would read now.
    pub(crate) fn may_read(&self) -> bool {
        self.closed.is_none()
            && !self.starved
            && backpressure::may_read(self.core.has_message(), self.pool.len())
    }

    /// Feeds `bytes` to the core as one read, as the reactor reads: into a
    /// large body's missing part first, straight, then into the read buffer
    /// (here without the reactor's limit on that tail).
    pub(crate) fn read(&mut self, bytes: &[u8]) -> Flow {
        let mut into_body = 0;
        if let Some(space) = self.core.body_space() {
            into_body = space.len().min(bytes.len());
            space[..into_body].copy_from_slice(&bytes[..into_body]);
        }
        self.direct_reads += u64::from(into_body > 0);
        // The read buffer, as long as the reactor's (which the core may
        // swap for other memory of that length).
        let mut buf = bytes[into_body..].to_vec();
        let len = buf.len();
        buf.resize(len.max(READ_BUF), 0);
        let flow = self.core.handle_read(
            into_body,
            &mut buf,
            len,
            &self.pool,
            &mut self.budget,
            self.now,
        );
        assert_eq!(buf.len(), len.max(READ_BUF), "the buffer keeps its length");
        self.after(flow)
    }

    /// Resumes a starved peer if its pool has messages again.
    pub(crate) fn resume(&mut self) -> Flow {
        if !self.starved || self.closed.is_some() || self.pool.is_empty() {
            return Flow::Continue;
        }
        self.starved = false;
        let flow = self.core.handle_resume(&self.pool, &mut self.budget);
        self.after(flow)
    }

    /// Lets the core act on its clock (a deadline may have passed).
    pub(crate) fn tick(&mut self) -> Option<Close> {
        if self.closed.is_some() {
            return None;
        }
        let close = self.core.handle_timeout(self.now, self.starved)?;
        self.collect();
        self.close(close);
        Some(close)
    }

    /// The transport ended under this peer.
    pub(crate) fn end(&mut self, end: End) -> Close {
        let close = self.core.handle_end(end);
        self.close(close);
        close
    }

    fn after(&mut self, flow: Flow) -> Flow {
        self.collect();
        match flow {
            Flow::Continue => {}
            Flow::Starved => self.starved = true,
            Flow::Close(close) => self.close(close),
        }
        flow
    }

    fn close(&mut self, close: Close) {
        self.core.release_budget(&mut self.budget);
        self.core.give_back_unsent(&close);
        self.collect();
        self.closed = Some(close);
        if !close.is_graceful() {
            // A reset, modelled as Windows (and Wine 10) carry it out: the
            // other end's receive buffer — what this peer wrote that the
            // other has not read — is destroyed. A FIN keeps it.
            self.pipe.clear();
        }
    }

    fn collect(&mut self) {
        while let Some(m) = self.core.poll_delivery() {
            self.delivered.push(m);
        }
    }

    /// Takes what was delivered so far (returning their messages to the pool
    /// when dropped).
    pub(crate) fn take_delivered(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.delivered)
    }
}

/// A connected client and an accepted server channel. The client's
/// HelloRequest is queued (message id `hello_id`); nothing has moved yet.
pub(crate) struct Pair {
    pub(crate) client: Peer,
    pub(crate) server: Peer,
}

impl Pair {
    #[cfg(test)]
    pub(crate) fn new(pool_size: usize) -> Pair {
        Pair::with_pools(pool_size, pool_size)
    }

    #[cfg(test)]
    pub(crate) fn with_pools(client_pool: usize, server_pool: usize) -> Pair {
        Pair::with_timeouts(client_pool, server_pool, Timeouts::default())
    }

    pub(crate) fn with_timeouts(
        client_pool: usize,
        server_pool: usize,
        timeouts: Timeouts,
    ) -> Pair {
        let now = Instant::now();
        let mut hello = Message::new();
        hello.header.proto.opcode = OpCode::HelloRequest;
        hello.header.message_id = Pair::HELLO_ID;
        let mut client = ChannelCore::client(CLIENT, hello, timeouts);
        client.handle_connecting(now);
        client.handle_connected();
        Pair {
            client: Peer::new(client, client_pool, now),
            server: Peer::new(
                ChannelCore::accepted(SERVER, timeouts, now),
                server_pool,
                now,
            ),
        }
    }

    /// Moves both clocks forward by `d`, then lets both cores act on them.
    pub(crate) fn advance(&mut self, d: Duration) {
        for peer in [&mut self.client, &mut self.server] {
            peer.now += d;
            peer.tick();
        }
    }

    /// The HelloRequest's message id.
    pub(crate) const HELLO_ID: u64 = 0x4e11;

    /// Hello, accepted: both ends open, both deliveries taken.
    #[cfg(test)]
    pub(crate) fn connected(pool_size: usize) -> Pair {
        Pair::connected_with(pool_size, Timeouts::default())
    }

    /// [`Pair::connected`] with these timeouts on both ends.
    #[cfg(test)]
    pub(crate) fn connected_with(pool_size: usize, timeouts: Timeouts) -> Pair {
        let mut p = Pair::with_timeouts(pool_size, pool_size, timeouts);
        p.settle();
        let hello = p.server.take_delivered();
        assert_eq!(hello.len(), 1);
        assert_eq!(hello[0].opcode(), OpCode::HelloRequest);
        let answer = p.server.message(OpCode::HelloResponse, Pair::HELLO_ID, b"");
        p.server.post(answer);
        p.settle();
        let reply = p.client.take_delivered();
        assert_eq!(reply.len(), 1);
        assert_eq!(reply[0].opcode(), OpCode::HelloResponse);
        p
    }

    pub(crate) fn peer(&mut self, side: Side) -> &mut Peer {
        match side {
            Side::Client => &mut self.client,
            Side::Server => &mut self.server,
        }
    }

    /// Moves up to `max` bytes of `from`'s pipe into the other peer, in reads
    /// of at most `chunk` bytes, while the other peer may read. Returns the
    /// bytes moved.
    pub(crate) fn transfer(&mut self, from: Side, max: usize, chunk: usize) -> usize {
        let (src, dst) = match from {
            Side::Client => (&mut self.client, &mut self.server),
            Side::Server => (&mut self.server, &mut self.client),
        };
        let mut moved = 0;
        let mut buf = Vec::new();
        while moved < max && !src.pipe.is_empty() && dst.closed.is_none() {
            if !dst.may_read() {
                // As the reactor does when its peek finds data but the pool
                // has no message: stop reading until it refills.
                dst.starved = true;
                break;
            }
            let n = chunk.max(1).min(max - moved).min(src.pipe.len());
            buf.clear();
            buf.extend(src.pipe.drain(..n));
            moved += n;
            dst.read(&buf);
        }
        moved
    }

    /// Writes, reads and resumes both ways until nothing moves.
    #[cfg(test)]
    pub(crate) fn settle(&mut self) {
        for _ in 0..10_000 {
            self.client.write_all();
            self.server.write_all();
            self.client.resume();
            self.server.resume();
            let moved = self.transfer(Side::Client, usize::MAX, 64 * 1024)
                + self.transfer(Side::Server, usize::MAX, 64 * 1024);
            if moved == 0 && !self.client.core.wants_write() && !self.server.core.wants_write()
                || self.client.closed.is_some() && self.server.closed.is_some()
            {
                return;
            }
        }
        panic!("the pair did not settle");
    }
}
