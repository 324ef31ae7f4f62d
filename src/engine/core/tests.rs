//! Deterministic tests of the channel core: two cores over byte pipes.
