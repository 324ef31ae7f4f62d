//! The echo server: listens, accepts every connection, answers HelloRequest,
//! Request and ByeRequest, counts Signals, and can log every message.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tofu::{Address, ChannelGroup, Engine, Message, OpCode, Status};

use crate::fail::Failure;
use crate::session::new_message;

/// How many body bytes a log line shows.
const PREVIEW: usize = 48;

/// Opens a listener on each of `addrs` in `group`; returns the addresses
/// actually bound (a TCP port 0 becomes the port the OS picked).
///
/// # Errors
///
/// [`Failure::Other`] when a listener cannot be opened (address in use, not an
/// address of this host), [`Failure::Timeout`] when the engine does not answer.
pub(crate) fn listen(
    engine: &Engine,
    group: &ChannelGroup,
    addrs: &[Address],
    timeout: Duration,
) -> Result<Vec<Address>, Failure> {
    let mut bound = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let mut welcome = new_message(engine)?;
        addr.format(&mut welcome)
            .map_err(|e| Failure::Usage(format!("bad listen address {addr}: {e}")))?;
        group.post(welcome)?;
        let ready = loop {
            let m = group.wait_receive(Some(timeout))?.ok_or_else(|| {
                Failure::Timeout(format!("the engine did not open {addr} within {timeout:?}"))
            })?;
            if m.opcode() == OpCode::WelcomeResponse {
                break m;
            }
        };
        if ready.status() != Status::Success {
            let hint = match ready.status() {
                Status::ListenFailed => " (address in use, or not an address of this host?)",
                _ => "",
            };
            return Err(Failure::Other(format!(
                "cannot listen on {addr}: {}{hint}",
                ready.status()
            )));
        }
        let actual = ready
            .text_headers
            .get("~listen_on")
            .and_then(|v| Address::parse_server(v).ok())
            .unwrap_or_else(|| addr.clone());
        bound.push(actual);
    }
    Ok(bound)
}

/// Serves `group` until the engine shuts down or someone calls
/// `group.update_receiver(None)`. Signals are counted in `signals`; every
/// message is written to `log` when given.
///
/// # Errors
///
/// Only when writing the log fails.
pub(crate) fn serve(
    group: &ChannelGroup,
    mut log: Option<&mut dyn Write>,
    signals: &AtomicU64,
) -> Result<(), Failure> {
    loop {
        let mut m = match group.wait_receive(None) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(_) => return Ok(()), // the engine shut down
        };
        if m.is_from_engine() && m.status() == Status::ReceiverUpdate {
            return Ok(());
        }
        if let Some(out) = log.as_deref_mut() {
            writeln!(out, "{}", describe(&m))?;
        }
        if m.is_from_engine() {
            continue;
        }
        let reply = match m.opcode() {
            OpCode::Signal => {
                signals.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            OpCode::HelloRequest => OpCode::HelloResponse,
            OpCode::Request => OpCode::Response,
            OpCode::ByeRequest => OpCode::ByeResponse,
            _ => continue,
        };
        m.header.proto.opcode = reply;
        if let Err(e) = group.post(m) {
            // The channel closed meanwhile (the peer went away): nothing to do
            // but say so.
            if let Some(out) = log.as_deref_mut() {
                writeln!(
                    out,
                    "ch {}  could not answer: {}",
                    e.message.channel_number(),
                    e.error
                )?;
            }
        }
    }
}

/// One log line: channel, opcode, message_id, status, text headers, body preview.
pub(crate) fn describe(m: &Message) -> String {
    let mut s = format!("ch {}  ", m.channel_number());
    if m.is_from_engine() {
        if m.opcode() == OpCode::Signal {
            let _ = write!(s, "engine report: {}", m.status());
        } else {
            let _ = write!(
                s,
                "engine returned {:?} id {}: {}",
                m.opcode(),
                m.header.message_id,
                m.status()
            );
        }
        return s;
    }
    let _ = write!(s, "{:?}  id {}", m.opcode(), m.header.message_id);
    if m.status() != Status::Success {
        let _ = write!(s, "  status {}", m.status());
    }
    if m.has_more() {
        s.push_str("  more");
    }
    s.push_str("  headers {");
    for (i, (name, value)) in m.text_headers.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{name}: {value}");
    }
    let _ = write!(s, "}}  body {} B", m.body.len());
    if !m.body.is_empty() {
        let shown = &m.body[..m.body.len().min(PREVIEW)];
        let _ = write!(s, " \"{}\"", shown.escape_ascii());
        if m.body.len() > PREVIEW {
            s.push_str("...");
        }
    }
    s
}

/// Runs `tofu serve`: listens on every address, prints `listening on ADDR`
/// for each (the address actually bound), then serves until killed, logging
/// every message to `out` unless `quiet`.
///
/// # Errors
///
/// See [`listen`]; and writing to `out`.
pub(crate) fn run(
    addrs: &[Address],
    quiet: bool,
    spin: Duration,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let engine = Engine::new(tofu::Options {
        initial_pool_msgs: 256,
        max_pool_msgs: 1024,
        receive_spin: spin,
        ..tofu::Options::default()
    })?;
    let group = engine.create_group()?;
    for addr in listen(&engine, &group, addrs, timeout)? {
        writeln!(out, "listening on {addr}")?;
    }
    out.flush()?;
    let signals = AtomicU64::new(0);
    serve(&group, if quiet { None } else { Some(out) }, &signals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_show_what_arrived() {
        let mut m = Message::new();
        m.header.channel_number = 3;
        m.header.message_id = 9;
        m.text_headers.append("k", "v").unwrap();
        m.text_headers.append("n", "1").unwrap();
        m.body = b"hi\x00there".to_vec();
        assert_eq!(
            describe(&m),
            "ch 3  Request  id 9  headers {k: v, n: 1}  body 8 B \"hi\\x00there\""
        );
        m.body = vec![b'a'; 100];
        assert!(describe(&m).ends_with(&format!("body 100 B \"{}\"...", "a".repeat(PREVIEW))));
    }
}
