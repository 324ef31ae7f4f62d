//! The end of a channel, accounted for (SPEC §5.6): every message posted on a
//! channel ends exactly once, and the `channel_closed` report is the last word
//! about it.
//!
//! `post` runs on application threads, so when the I/O thread closes a channel
//! some posts may still be on their way to it. Closing reads how many in the
//! same atomic step that closes the number for new posts ([`Directory`]); the
//! channel then lives on as a *zombie* until each of those late messages has
//! arrived and been given back. Only then is the report sent and the number
//! released — and reused only after [`REUSE_DISTANCE`] newer closes
//! ([`Numbers`]).
//!
//! [`REUSE_DISTANCE`]: super::super::directory::REUSE_DISTANCE

use crate::error::Status;
use crate::message::{Message, Origin};

use super::super::IntMap;
use super::super::directory::{Directory, Numbers, RESERVE};
use super::Close;

/// A closed channel whose number still has posts on their way.
#[derive(Debug)]
struct Zombie {
    group: u32,
    first_id: u64,
    status: Status,
    report: bool,
    cause: Option<Status>,
    pending: u32,
}

/// A message for a group.
#[derive(Debug)]
pub(crate) struct ForGroup {
    pub(crate) group: u32,
    pub(crate) msg: Message,
}

/// A late message given back, and the report if it was the last one.
#[derive(Debug)]
pub(crate) struct Late {
    pub(crate) given_back: ForGroup,
    pub(crate) report: Option<ForGroup>,
}

/// Channel numbers and zombies, owned by the I/O thread.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    numbers: Numbers,
    zombies: IntMap<u16, Zombie>,
}

impl Lifecycle {
    pub(crate) fn new() -> Lifecycle {
        Lifecycle {
            numbers: Numbers::new(),
            zombies: IntMap::default(),
        }
    }

    /// A number for a new channel (an accepted connection).
    pub(crate) fn alloc(&mut self) -> Option<u16> {
        self.numbers.alloc()
    }

    /// A number from [`alloc`](Self::alloc) that was never opened.
    pub(crate) fn release_unused(&mut self, number: u16) {
        self.numbers.release(number);
    }

    /// Keeps the reserve `post` takes numbers from topped up.
    /// An empty reserve after refilling means every number is in use: the
    /// directory says so, and `post` on channel 0 fails at once.
    pub(crate) fn refill_reserve(&mut self, directory: &Directory) {
        let reserve = &directory.reserve;
        if reserve.len() < RESERVE / 2 {
            while reserve.len() < RESERVE {
                match self.numbers.alloc() {
                    Some(n) => {
                        let _ = reserve.push(n);
                    }
                    None => break,
                }
            }
        }
        directory.set_exhausted(reserve.is_empty());
    }

    #[cfg(test)]
    /// `number` is closed, with posts still on their way.
    pub(crate) fn is_zombie(&self, number: u16) -> bool {
        self.zombies.contains_key(&number)
    }

    /// Closes `number` for new posts. Messages posted before that and still on
    /// their way come back (with the close's status) before the
    /// `channel_closed` report (with its cause); returns the report when none
    /// is on its way.
    pub(crate) fn retire(
        &mut self,
        directory: &Directory,
        number: u16,
        group: u32,
        first_id: u64,
        close: &Close,
    ) -> Option<ForGroup> {
        let (status, report, cause) = (close.status, close.report, close.report_cause());
        let pending = directory.close(number);
        if pending == 0 {
            return self.finish(number, group, first_id, report.then_some(cause));
        }
        self.zombies.insert(
            number,
            Zombie {
                group,
                first_id,
                status,
                report,
                cause,
                pending,
            },
        );
        None
    }

    /// A message posted before its channel closed arrived: give it back.
    /// `Err` gives `msg` back untouched when `number` is not a zombie.
    #[inline]
    pub(crate) fn late(&mut self, number: u16, msg: Message) -> Result<Late, Message> {
        if self.zombies.is_empty() {
            return Err(msg);
        }
        self.late_slow(number, msg)
    }

    fn late_slow(&mut self, number: u16, mut msg: Message) -> Result<Late, Message> {
        let Some(z) = self.zombies.get_mut(&number) else {
            return Err(msg);
        };
        msg.header.proto.origin = Origin::Engine;
        msg.header.status = z.status as u8;
        let group = z.group;
        z.pending -= 1;
        let done = (z.pending == 0).then_some((z.first_id, z.report.then_some(z.cause)));
        let report = match done {
            Some((first_id, report)) => {
                self.zombies.remove(&number);
                self.finish(number, group, first_id, report)
            }
            None => None,
        };
        Ok(Late {
            given_back: ForGroup { group, msg },
            report,
        })
    }

    /// Releases the number; `report` is `Some(cause)` when the group hears
    /// of the close.
    fn finish(
        &mut self,
        number: u16,
        group: u32,
        first_id: u64,
        report: Option<Option<Status>>,
    ) -> Option<ForGroup> {
        self.numbers.release(number);
        report.map(|cause| ForGroup {
            group,
            msg: Message::closed_report(number, first_id, cause),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::core::Cause;
    use crate::message::OpCode;

    fn posted(number: u16, id: u64) -> Message {
        let mut m = Message::new();
        m.header.channel_number = number;
        m.header.message_id = id;
        m
    }

    #[test]
    fn close_with_nothing_in_flight_reports_at_once() {
        let d = Directory::new();
        let mut l = Lifecycle::new();
        let n = l.alloc().unwrap();
        d.open(n, 7);
        let r = l
            .retire(
                &d,
                n,
                7,
                42,
                &Close::new(Status::PeerDisconnected, true, Cause::ReadEnded),
            )
            .expect("report");
        assert_eq!(r.group, 7);
        assert_eq!(r.msg.status(), Status::ChannelClosed);
        assert_eq!(r.msg.header.message_id, 42);
        assert_eq!(r.msg.opcode(), OpCode::Signal);
        assert!(r.msg.is_from_engine());
        assert_eq!(r.msg.close_cause(), Some(Status::PeerDisconnected));
        assert!(!l.is_zombie(n));
    }

    #[test]
    fn late_posts_come_back_before_the_report() {
        let d = Directory::new();
        let mut l = Lifecycle::new();
        let n = l.alloc().unwrap();
        d.open(n, 3);
        d.acquire(n, 3).unwrap();
        d.acquire(n, 3).unwrap();
        assert!(
            l.retire(
                &d,
                n,
                3,
                9,
                &Close::new(Status::PeerDisconnected, true, Cause::ReadEnded)
            )
            .is_none()
        );
        assert!(l.is_zombie(n));
        // Two posts were on their way: each is given back with the status,
        // the report rides with the last.
        d.arrived(n);
        let first = l.late(n, posted(n, 1)).unwrap();
        assert_eq!(first.given_back.msg.status(), Status::PeerDisconnected);
        assert!(first.given_back.msg.is_from_engine());
        assert!(first.report.is_none());
        d.arrived(n);
        let last = l.late(n, posted(n, 2)).unwrap();
        assert_eq!(last.given_back.msg.header.message_id, 2);
        let report = last.report.expect("report after the last late message");
        assert_eq!((report.group, report.msg.header.message_id), (3, 9));
        assert_eq!(report.msg.close_cause(), Some(Status::PeerDisconnected));
        assert!(!l.is_zombie(n));
        // Not a zombie any more: a stray message is handed back untouched.
        assert!(l.late(n, posted(n, 3)).is_err());
    }

    #[test]
    fn silent_close_frees_the_number_without_a_report() {
        let d = Directory::new();
        let mut l = Lifecycle::new();
        let n = l.alloc().unwrap();
        d.open(n, 1);
        assert!(
            l.retire(
                &d,
                n,
                1,
                0,
                &Close::new(Status::InvalidMessage, false, Cause::InvalidFrame)
            )
            .is_none()
        );
        assert!(!l.is_zombie(n));
        assert_eq!(d.acquire(n, 1), Err(crate::Error::InvalidChannelNumber));
    }

    #[test]
    fn an_empty_reserve_says_the_numbers_are_exhausted() {
        let d = Directory::new();
        let mut l = Lifecycle::new();
        let mut held = Vec::new();
        while let Some(n) = l.alloc() {
            held.push(n);
        }
        l.refill_reserve(&d);
        assert!(d.is_exhausted(), "no number left for the reserve");
        l.release_unused(held[0]);
        l.refill_reserve(&d);
        assert!(!d.is_exhausted());
        assert_eq!(d.reserve.pop(), Some(held[0]));
    }

    #[test]
    fn reserve_is_topped_up_from_fresh_numbers() {
        let d = Directory::new();
        let mut l = Lifecycle::new();
        l.refill_reserve(&d);
        assert_eq!(d.reserve.len(), RESERVE);
        let taken: Vec<u16> = (0..RESERVE / 2 + 1)
            .map(|_| d.reserve.pop().unwrap())
            .collect();
        l.refill_reserve(&d);
        assert_eq!(d.reserve.len(), RESERVE, "refilled below half");
        let mut all: Vec<u16> = taken;
        while let Some(n) = d.reserve.pop() {
            all.push(n);
        }
        all.sort_unstable();
        all.dedup();
        assert_eq!(
            all.len(),
            RESERVE + RESERVE / 2 + 1,
            "no number handed out twice"
        );
    }
}
