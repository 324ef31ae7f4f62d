//! Opening channels: listening, accepting (with the retry after running out
//! of descriptors), and connecting (name lookup, non-blocking connect,
//! fallback addresses).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

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

impl Reactor {
    // ----- listening ---------------------------------------------------------

    pub(super) fn listen(&mut self, group: u32, mut msg: Message, addr: Result<Address, Error>) {
        let number = msg.header.channel_number;
        let first_id = msg.header.message_id;
        msg.header.proto.opcode = OpCode::WelcomeResponse;
        let (mut sock, uds_path) = match bind(addr) {
            Ok(b) => b,
            Err(e) => return self.listen_failed(group, msg, e.status()),
        };
        if let Some(local) = sock.local_tcp_addr() {
            // Report the port actually bound (useful with port 0).
            let value = Address::TcpServer {
                host: local.ip().to_string(),
                port: local.port(),
            }
            .to_string();
            msg.text_headers.remove("~listen_on");
            let _ = msg.text_headers.append("~listen_on", &value);
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

    /// The WelcomeResponse comes back from the engine with `status`; the
    /// number is retired at once.
    fn listen_failed(&mut self, group: u32, mut msg: Message, status: Status) {
        let (number, first_id) = (msg.header.channel_number, msg.header.message_id);
        msg.header.proto.origin = Origin::Engine;
        msg.header.status = status as u8;
        self.deliver(group, msg);
        self.shared.limits.free_slot();
        self.retry_accept |= !self.accept_blocked.is_empty();
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
            if let Some(idle) = self.keepalive {
                sock.set_keepalive(idle);
            }
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
            self.close(key, connect_failed(Status::ConnectFailed));
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
        if let Some(idle) = self.keepalive {
            sock.set_keepalive(idle);
        }
        let registered = self.registry.register(
            &mut sock,
            key.token(),
            Interest::READABLE | Interest::WRITABLE,
        );
        if registered.is_err() {
            self.close(key, connect_failed(Status::ConnectFailed));
            return;
        }
        if let Some(s) = self.stream_mut(key) {
            s.sock = Some(sock);
            s.core.handle_connecting();
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

/// Binds the listener a WelcomeRequest asks for.
fn bind(addr: Result<Address, Error>) -> Result<(Listener, Option<std::path::PathBuf>), Error> {
    let a = addr?;
    match &a {
        Address::TcpServer { .. } => {
            let sa = a.server_socket_addr()?;
            sys::listen_tcp(sa)
                .map(|l| (l, None))
                .map_err(|e| listen_error(&a, e))
        }
        Address::UdsServer { path } => sys::listen_uds(path)
            .map(|l| (l, Some(path.clone())))
            .map_err(|e| listen_error(&a, e)),
        _ => Err(Error::InvalidAddress),
    }
}

fn listen_error(addr: &Address, e: io::Error) -> Error {
    debug!("listen on {addr} failed: {e}");
    Error::ListenFailed
}
