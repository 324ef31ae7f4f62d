//! Opening channels: listening (on an IP literal, all interfaces, a host
//! name looked up off the I/O thread, or a fresh UDS path), accepting (with
//! the retry after running out of descriptors), and connecting (name lookup,
//! non-blocking connect, fallback addresses).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use mio::Interest;
use tracing::debug;

use super::super::core::channel::ChannelCore;
use super::super::core::{Cause, Close};
use super::super::resolver::spawn_system_lookup;
use super::super::slab::Key;
use super::{Channel, Counters, ListenerChannel, Reactor, State, Stream, schedule, stream_of};
use crate::address::Address;
use crate::error::{Error, Status};
use crate::message::{Message, OpCode, Origin};
use crate::sys::{self, Listener};

/// A failed connect: the HelloRequest comes back with `status`.
fn connect_failed(status: Status) -> Close {
    Close::new(status, true, Cause::ConnectFailed)
}

/// A listener on a host name that could not be looked up or bound: its
/// WelcomeResponse comes back with `listen_failed` (the last word about it,
/// as for any failed listen: no `channel_closed` report).
fn lookup_listen_failed(cause: Cause) -> Close {
    Close::new(Status::ListenFailed, false, cause)
}

/// A listener waiting for its host name's lookup (SPEC §2.3, §5.3): the
/// WelcomeRequest, already turned into its WelcomeResponse, until the name
/// resolves and an address binds, or the lookup timeout passes.
pub(super) struct Binding {
    msg: Message,
    deadline: Option<Instant>,
}

impl Binding {
    pub(super) fn first_id(&self) -> u64 {
        self.msg.header.message_id
    }

    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

/// What `bind` gives: the listening socket and, for UDS, the path bound.
type Bound = Result<(Listener, Option<PathBuf>), Error>;

impl Reactor {
    // ----- listening ---------------------------------------------------------

    pub(super) fn listen(&mut self, group: u32, mut msg: Message, addr: Result<Address, Error>) {
        msg.header.proto.opcode = OpCode::WelcomeResponse;
        match addr {
            Ok(a @ Address::TcpServer { .. }) if a.server_socket_addr().is_err() => {
                let Address::TcpServer { host, port } = a else {
                    unreachable!("matched above")
                };
                self.listen_by_name(group, msg, host, port);
            }
            addr => {
                let bound = bind(addr);
                self.listen_on(group, msg, bound);
            }
        }
    }

    /// Binding done (or failed): the listener is registered and its
    /// WelcomeResponse names the address actually bound — the port the OS
    /// picked for port 0, the IP a host name resolved to, the fresh path for
    /// `uds|` (SPEC §2.3).
    fn listen_on(&mut self, group: u32, mut msg: Message, bound: Bound) {
        let number = msg.header.channel_number;
        let first_id = msg.header.message_id;
        let (mut sock, uds_path) = match bound {
            Ok(b) => b,
            Err(e) => return self.listen_failed(group, msg, e.status()),
        };
        let actual = match (sock.local_tcp_addr(), &uds_path) {
            (Some(local), _) => Some(Address::TcpServer {
                host: local.ip().to_string(),
                port: local.port(),
            }),
            (None, Some(path)) => Some(Address::UdsServer { path: path.clone() }),
            (None, None) => None,
        };
        if let Some(actual) = actual {
            msg.text_headers.remove("~listen_on");
            let _ = msg.text_headers.append("~listen_on", &actual.to_string());
        }
        let registered = match self.slab.next_key() {
            Some(key) => self
                .registry
                .register(&mut sock, key.token(), Interest::READABLE)
                .map(|()| key),
            None => Err(io::Error::other("no free slot")),
        };
        let key = match registered {
            Ok(key) => key,
            Err(e) => {
                debug!(channel = number, "register listener failed: {e}");
                if let Some(p) = &uds_path {
                    sys::remove_socket_file(p);
                }
                return self.listen_failed(group, msg, Status::ListenFailed);
            }
        };
        let inserted = self.slab.insert_with(|_| Channel {
            number,
            group,
            state: State::Listener(ListenerChannel {
                sock,
                uds_path,
                first_id,
                blocked: false,
            }),
        });
        debug_assert_eq!(inserted, Some(key));
        self.by_number.insert(number, key);
        Counters::add(&self.shared.counters.open_channels, 1);
        debug!(channel = number, "listening");
        self.deliver(group, msg);
    }

    /// A listener on a host name: the lookup runs off the I/O thread (the
    /// connect resolver, within the lookup timeout); meanwhile the channel
    /// waits as a [`Binding`].
    fn listen_by_name(&mut self, group: u32, msg: Message, host: String, port: u16) {
        let number = msg.header.channel_number;
        if self.slab.next_key().is_none() {
            // Cannot happen: there are more slots than channel numbers.
            return self.listen_failed(group, msg, Status::ListenFailed);
        }
        let deadline = self.timeouts.lookup.map(|t| self.now + t);
        let Some(key) = self.slab.insert_with(|_| Channel {
            number,
            group,
            state: State::Binding(Binding { msg, deadline }),
        }) else {
            return;
        };
        self.by_number.insert(number, key);
        Counters::add(&self.shared.counters.open_channels, 1);
        if let Some(deadline) = deadline {
            self.timers.push(std::cmp::Reverse((deadline, key)));
        }
        debug!(channel = number, "listen on {host}: looking the name up");
        let shared = &self.shared;
        let failed = self.resolver.lookup(key, host, port, &mut |k, h, p| {
            spawn_system_lookup(shared, k, h, p)
        });
        self.lookups_failed(failed);
    }

    /// The name of a [`Binding`] resolved (or not): bind the first address
    /// that binds, in the order the resolver gave.
    fn bind_resolved(&mut self, key: Key, result: io::Result<Vec<SocketAddr>>) {
        let Some(ch) = self.slab.remove(key) else {
            return;
        };
        let State::Binding(b) = ch.state else {
            unreachable!("checked by the caller")
        };
        // Out of the slab as a Binding; `listen_on` puts it back as a
        // listener (its open-channel slot stays taken) or fails it.
        self.by_number.remove(&ch.number);
        Counters::sub_open(&self.shared.counters);
        let bound = match result {
            Ok(addrs) => bind_first(&addrs),
            Err(e) => {
                debug!(channel = ch.number, "name lookup failed: {e}");
                Err(Error::ListenFailed)
            }
        };
        self.listen_on(ch.group, b.msg, bound);
    }

    /// A [`Binding`] closes before it bound: its lookup is abandoned, and its
    /// WelcomeResponse comes back with the close's status (unless the group
    /// or the engine is going away).
    pub(super) fn binding_closed(&mut self, key: Key, group: u32, b: Binding, close: &Close) {
        self.resolver.abandon(key);
        self.retry_lookups = true;
        if close.cause != Cause::Local {
            let mut msg = b.msg;
            msg.header.proto.origin = Origin::Engine;
            msg.header.status = close.status as u8;
            self.deliver(group, msg);
        }
    }

    /// The close for a [`Binding`] whose lookup timeout passed at `deadline`,
    /// if `key` is one.
    pub(super) fn binding_timeout(&self, key: Key, deadline: Instant) -> Option<Close> {
        match &self.slab.get(key)?.state {
            State::Binding(b) if b.deadline == Some(deadline) => {
                Some(lookup_listen_failed(Cause::LookupTimeout))
            }
            _ => None,
        }
    }

    /// The WelcomeResponse comes back from the engine with `status`; the
    /// number is retired at once.
    fn listen_failed(&mut self, group: u32, mut msg: Message, status: Status) {
        let (number, first_id) = (msg.header.channel_number, msg.header.message_id);
        msg.header.proto.origin = Origin::Engine;
        msg.header.status = status as u8;
        // The slot is free before the application hears of the failure, so
        // an open posted in answer finds it.
        self.shared.limits.free_slot();
        self.retry_accept |= !self.accept_blocked.is_empty();
        self.deliver(group, msg);
        let close = Close::new(Status::ChannelClosed, false, Cause::Local);
        self.retire(number, group, first_id, close);
    }

    pub(super) fn accept(&mut self, listener_key: Key) {
        loop {
            let Some(ch) = self.slab.get_mut(listener_key) else {
                return;
            };
            let (group, lnum) = (ch.group, ch.number);
            let State::Listener(l) = &mut ch.state else {
                return;
            };
            // At the open-channel cap: the connections wait in the backlog
            // until a channel closes (SPEC §5.7a).
            let limits = &self.shared.limits;
            if !limits.take_slot() {
                debug!(channel = lnum, "open-channel cap reached: accepting paused");
                Counters::add(&self.shared.counters.accept_pauses, 1);
                if !self.accept_blocked.contains(&listener_key) {
                    self.accept_blocked.push(listener_key);
                }
                return;
            }
            let accepted = l.sock.accept();
            if accepted.is_err() {
                limits.free_slot();
            }
            let mut sock = match accepted {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    // Typically out of descriptors: the connection stays in the
                    // backlog, and edge-triggered readiness will not fire again
                    // for it. Report once, retry when a channel closes.
                    debug!(channel = lnum, "accept failed: {e}");
                    let report = !l.blocked;
                    l.blocked = true;
                    if !self.accept_blocked.contains(&listener_key) {
                        self.accept_blocked.push(listener_key);
                    }
                    if report {
                        self.deliver(group, Message::report(lnum, Status::AcceptFailed, 0));
                    }
                    return;
                }
            };
            l.blocked = false;
            sock.configure(&self.stream_settings);
            let Some(number) = self.lifecycle.alloc() else {
                debug!("no channel number free: connection dropped");
                self.shared.limits.free_slot();
                continue;
            };
            let key = self.slab.insert_with(|_| Channel {
                number,
                group,
                state: State::Stream(Stream::new(ChannelCore::accepted(
                    number,
                    self.timeouts,
                    self.now,
                ))),
            });
            let Some(key) = key else {
                self.lifecycle.release_unused(number);
                self.shared.limits.free_slot();
                continue;
            };
            let registered = self.registry.register(
                &mut sock,
                key.token(),
                Interest::READABLE | Interest::WRITABLE,
            );
            if registered.is_err() {
                self.slab.remove(key);
                self.lifecycle.release_unused(number);
                self.shared.limits.free_slot();
                continue;
            }
            if let Some(s) = stream_of(&mut self.slab, key) {
                s.sock = Some(sock);
                schedule(&mut self.timers, key, &mut s.core);
            }
            self.shared.directory.open(number, group);
            self.by_number.insert(number, key);
            Counters::add(&self.shared.counters.open_channels, 1);
            Counters::add(&self.shared.counters.accepted, 1);
            debug!(channel = number, listener = lnum, "accepted");
        }
    }

    pub(super) fn retry_blocked_accepts(&mut self) {
        if !std::mem::take(&mut self.retry_accept) {
            return;
        }
        // `accept` puts a listener back on the list if it fails again.
        for key in std::mem::take(&mut self.accept_blocked) {
            self.accept(key);
        }
    }

    // ----- connecting --------------------------------------------------------

    pub(super) fn connect(&mut self, group: u32, msg: Message, addr: Result<Address, Error>) {
        let number = msg.header.channel_number;
        let first_id = msg.header.message_id;
        let core = ChannelCore::client(number, msg, self.timeouts);
        let Some(key) = self.slab.insert_with(|_| Channel {
            number,
            group,
            state: State::Stream(Stream::new(core)),
        }) else {
            // Cannot happen: there are more slots than channel numbers.
            self.shared.limits.free_slot();
            let close = connect_failed(Status::ConnectFailed);
            self.retire(number, group, first_id, close);
            return;
        };
        self.by_number.insert(number, key);
        Counters::add(&self.shared.counters.open_channels, 1);
        match addr {
            Err(e) => self.close(key, connect_failed(e.status())),
            Ok(Address::UdsClient { path }) => match sys::connect_uds(&path) {
                Ok(sock) => self.start_connect(key, sock),
                Err((e, io)) => {
                    debug!(
                        channel = number,
                        "connect to {} failed: {io}",
                        path.display()
                    );
                    self.close(key, connect_failed(e.status()));
                }
            },
            Ok(a @ Address::TcpClient { .. }) => match a.ip_literal_client() {
                Some(sa) => self.connect_tcp(key, VecDeque::from([sa])),
                None => {
                    let Address::TcpClient { host, port } = a else {
                        unreachable!("matched above")
                    };
                    if let Some(s) = stream_of(&mut self.slab, key) {
                        s.core.handle_resolving(self.now);
                        schedule(&mut self.timers, key, &mut s.core);
                    }
                    let shared = &self.shared;
                    let failed = self.resolver.lookup(key, host, port, &mut |k, h, p| {
                        spawn_system_lookup(shared, k, h, p)
                    });
                    self.lookups_failed(failed);
                }
            },
            Ok(_) => self.close(key, connect_failed(Status::InvalidAddress)),
        }
    }

    fn lookups_failed(&mut self, keys: Vec<Key>) {
        for key in keys {
            let binding = self
                .slab
                .get(key)
                .is_some_and(|c| matches!(c.state, State::Binding(_)));
            let close = if binding {
                lookup_listen_failed(Cause::ConnectFailed)
            } else {
                connect_failed(Status::ConnectFailed)
            };
            self.close(key, close);
        }
    }

    /// Starts waiting lookups once a place is free.
    pub(super) fn start_lookups(&mut self) {
        if !std::mem::take(&mut self.retry_lookups) {
            return;
        }
        let shared = &self.shared;
        let failed = self
            .resolver
            .start(&mut |k, h, p| spawn_system_lookup(shared, k, h, p));
        self.lookups_failed(failed);
    }

    pub(super) fn resolved(&mut self, key: Key, result: io::Result<Vec<SocketAddr>>) {
        let wanted = self.resolver.finished(key);
        self.retry_lookups = true;
        self.start_lookups();
        if !wanted {
            return; // abandoned: its channel is gone
        }
        let Some(ch) = self.slab.get(key) else {
            return; // closed meanwhile
        };
        if matches!(ch.state, State::Binding(_)) {
            return self.bind_resolved(key, result);
        }
        match result {
            Ok(addrs) if !addrs.is_empty() => self.connect_tcp(key, addrs.into()),
            Ok(_) => self.close(key, connect_failed(Status::ConnectFailed)),
            Err(e) => {
                debug!(channel = ch.number, "name lookup failed: {e}");
                self.close(key, connect_failed(Status::ConnectFailed));
            }
        }
    }

    /// Tries the addresses in turn until a non-blocking connect starts.
    fn connect_tcp(&mut self, key: Key, mut addrs: VecDeque<SocketAddr>) {
        while let Some(sa) = addrs.pop_front() {
            match sys::connect_tcp(sa) {
                Ok(sock) => {
                    if let Some(s) = self.stream_mut(key) {
                        s.fallbacks = addrs;
                    }
                    self.start_connect(key, sock);
                    return;
                }
                Err(e) => debug!("connect to {sa} failed: {e}"),
            }
        }
        self.close(key, connect_failed(Status::ConnectFailed));
    }

    fn start_connect(&mut self, key: Key, mut sock: sys::Stream) {
        sock.configure(&self.stream_settings);
        let registered = self.registry.register(
            &mut sock,
            key.token(),
            Interest::READABLE | Interest::WRITABLE,
        );
        if registered.is_err() {
            self.close(key, connect_failed(Status::ConnectFailed));
            return;
        }
        if let Some(s) = stream_of(&mut self.slab, key) {
            s.sock = Some(sock);
            s.core.handle_connecting(self.now);
            schedule(&mut self.timers, key, &mut s.core);
        }
    }

    pub(super) fn check_connect(&mut self, key: Key) {
        let Some(s) = self.stream_mut(key) else {
            return;
        };
        let Some(sock) = s.sock.as_ref() else {
            return;
        };
        let failed = match sock.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match sock.is_connected() {
                Ok(true) => None,
                Ok(false) => return, // still in progress
                Err(e) => Some(e),
            },
        };
        if let Some(e) = failed {
            debug!("connect failed: {e}");
            let next = std::mem::take(&mut s.fallbacks);
            if let Some(mut old) = s.sock.take() {
                let _ = self.registry.deregister(&mut old);
            }
            if next.is_empty() {
                self.close(key, connect_failed(Status::ConnectFailed));
            } else {
                self.connect_tcp(key, next);
            }
            return;
        }
        s.core.handle_connected();
        s.writable = true;
        s.readable = true;
        debug!(channel = s.core.number(), "connected");
        if self.flush(key).is_continue() {
            self.read(key);
        }
    }
}

/// Binds the listener a WelcomeRequest asks for (an IP literal or all IPv4
/// interfaces; a UDS path, or a fresh one in the temp dir for `uds|`).
fn bind(addr: Result<Address, Error>) -> Bound {
    let a = addr?;
    match &a {
        Address::TcpServer { .. } => {
            let sa = a.server_socket_addr()?;
            sys::listen_tcp(sa)
                .map(|l| (l, None))
                .map_err(|e| listen_error(&a, e))
        }
        Address::UdsServer { path } => {
            let path = if path.as_os_str().is_empty() {
                crate::address::temp_uds_path()
            } else {
                path.clone()
            };
            sys::listen_uds(&path)
                .map(|l| (l, Some(path)))
                .map_err(|e| listen_error(&a, e))
        }
        _ => Err(Error::InvalidAddress),
    }
}

/// Binds the first of `addrs` that binds (a host name's addresses, in the
/// resolver's order).
fn bind_first(addrs: &[SocketAddr]) -> Bound {
    for &sa in addrs {
        match sys::listen_tcp(sa) {
            Ok(l) => return Ok((l, None)),
            Err(e) => debug!("listen on {sa} failed: {e}"),
        }
    }
    Err(Error::ListenFailed)
}

fn listen_error(addr: &Address, e: io::Error) -> Error {
    debug!("listen on {addr} failed: {e}");
    Error::ListenFailed
}
