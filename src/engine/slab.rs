//! A generational slab: channel state lives here, and the mio token of each
//! socket carries its slot index *and* the slot's generation, so a late event
//! for a closed channel can never reach a new channel that reuses the slot.

use mio::Token;

/// Bits of a token holding the slot index; the rest hold the generation.
const INDEX_BITS: u32 = 20;
const INDEX_MASK: usize = (1 << INDEX_BITS) - 1;
/// More slots than channel numbers exist, and the all-ones index stays unused,
/// so no channel token can equal [`WAKER_TOKEN`].
pub(crate) const MAX_SLOTS: usize = INDEX_MASK;

/// The token of the engine's waker.
pub(crate) const WAKER_TOKEN: Token = Token(usize::MAX);

/// A slot key: index plus generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl Key {
    pub(crate) fn token(self) -> Token {
        let gen_bits = usize::BITS - INDEX_BITS;
        let generation = (self.generation as usize) & ((1usize << gen_bits) - 1);
        Token((generation << INDEX_BITS) | self.index as usize)
    }
}

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Slab<T> {
    pub(crate) fn new() -> Slab<T> {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    /// Inserts `make(key)`; `None` when every slot is taken.
    pub(crate) fn insert_with(&mut self, make: impl FnOnce(Key) -> T) -> Option<Key> {
        let index = match self.free.pop() {
            Some(i) => i,
            None if self.slots.len() < MAX_SLOTS => {
                self.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                (self.slots.len() - 1) as u32
            }
            None => return None,
        };
        let slot = &mut self.slots[index as usize];
        let key = Key {
            index,
            generation: slot.generation,
        };
        slot.value = Some(make(key));
        self.len += 1;
        Some(key)
    }

    /// The key the next insertion will get (so a socket can be registered with
    /// its token before the entry exists).
    pub(crate) fn next_key(&self) -> Option<Key> {
        match self.free.last() {
            Some(&index) => Some(Key {
                index,
                generation: self.slots[index as usize].generation,
            }),
            None if self.slots.len() < MAX_SLOTS => Some(Key {
                index: self.slots.len() as u32,
                generation: 0,
            }),
            None => None,
        }
    }

    pub(crate) fn get(&self, key: Key) -> Option<&T> {
        let slot = self.slots.get(key.index as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        slot.value.as_ref()
    }

    pub(crate) fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        let slot = self.slots.get_mut(key.index as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        slot.value.as_mut()
    }

    /// The live entry a token refers to, if its generation still matches.
    pub(crate) fn key_for_token(&self, token: Token) -> Option<Key> {
        let index = (token.0 & INDEX_MASK) as u32;
        let slot = self.slots.get(index as usize)?;
        slot.value.as_ref()?;
        let key = Key {
            index,
            generation: slot.generation,
        };
        (key.token() == token).then_some(key)
    }

    pub(crate) fn remove(&mut self, key: Key) -> Option<T> {
        let slot = self.slots.get_mut(key.index as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(key.index);
        self.len -= 1;
        Some(value)
    }

    /// Keys of every live entry.
    pub(crate) fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.value.as_ref().map(|_| Key {
                index: i as u32,
                generation: s.generation,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_tokens_do_not_reach_new_entries() {
        let mut slab = Slab::new();
        let a = slab.insert_with(|_| "a").unwrap();
        let token_a = a.token();
        assert_eq!(slab.key_for_token(token_a), Some(a));
        assert_eq!(slab.remove(a), Some("a"));
        let b = slab.insert_with(|_| "b").unwrap();
        assert_eq!(b.index, a.index, "slot reused");
        assert_ne!(b.token(), token_a);
        assert_eq!(slab.key_for_token(token_a), None);
        assert!(slab.get_mut(a).is_none());
        assert_eq!(slab.get_mut(b), Some(&mut "b"));
        assert_eq!(slab.len, 1);
        assert_ne!(b.token(), WAKER_TOKEN);
        let next = slab.next_key().unwrap();
        assert_eq!(slab.insert_with(|_| "c"), Some(next));
        assert_eq!(slab.get(next), Some(&"c"));
    }
}
