// The crate documentation — a short guide with runnable examples — is
// src/guide.md (doc tests included).
#![doc = include_str!("guide.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]
#![deny(missing_debug_implementations)]

// Lets code written against the public paths (`tofu::...`) compile inside the
// crate too: the fuzz checks replayed by the unit tests in `fuzz_replay`.
extern crate self as tofu;

mod address;
mod engine;
mod error;
mod heartbeat;
mod message;
mod reconnect;
mod sys;
pub mod testing;
#[cfg(feature = "unstable")]
pub mod wire;
#[cfg(not(feature = "unstable"))]
#[allow(unreachable_pub, dead_code)] // public only with `unstable`
mod wire;

#[cfg(test)]
mod fuzz_replay;

/// Internals for fuzzing (feature `unstable`): no semver promise.
#[cfg(any(test, feature = "unstable"))]
pub mod unstable {
    /// Runs one fuzz input against two sans-IO channel cores back to back
    /// over in-memory pipes: the bytes script posts, partial writes, split
    /// reads, corruption, resets and pool starvation, and every step checks
    /// the core's invariants (nothing panics; every posted message ends
    /// exactly once; deliveries are valid frames, in order; no pool message
    /// leaks).
    ///
    /// # Panics
    ///
    /// When an invariant does not hold — that is the finding.
    pub fn fuzz_channel(data: &[u8]) {
        crate::engine::fuzz_channel(data);
    }
}

pub use address::Address;
pub use engine::{
    ChannelGroup, DEFAULT_INITIAL_POOL_MSGS, DEFAULT_MAX_POOL_MSGS, DEFAULT_UNIX_SEND_BUFFER,
    Engine, MAX_RECEIVE_SPIN, Options, Stats,
};
pub use error::{Error, PostError, Status};
pub use heartbeat::Heartbeat;
pub use message::{
    Allocation, BinaryHeader, ENGINE_CHANNEL, MAX_SECTION_LEN, Message, MessageKind, More, OpCode,
    Origin, Pool, ProtoFields, Role, TextHeaders, TextHeadersIter, next_message_id,
};
pub use reconnect::{Handled, Reconnect, ReconnectEvent, ReconnectOptions};

/// The README's examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
