//! Drives two sans-IO channel cores with a script decoded from arbitrary
//! bytes (posts of every opcode, partial writes, split reads, corrupted and
//! truncated streams, resets, pool starvation) and checks the core's
//! invariants after every step: see `tofu::unstable::fuzz_channel`.
//!
//! Shared by the fuzz target `channel` and by `src/fuzz_replay.rs`, which
//! replays the saved inputs on stable.

/// Checks one input; panics on a violation.
pub(crate) fn run(data: &[u8]) {
    tofu::unstable::fuzz_channel(data);
}
