//! `tofu send`: connect, send one Request (or Signal), print the Response, Bye.

use std::io::Write;
use std::time::Duration;

use tofu::{Address, Engine, MAX_SECTION_LEN, OpCode, Options, Status};

use crate::fail::Failure;
use crate::session::Session;

/// What to send.
pub(crate) struct SendArgs {
    /// Where to connect.
    pub(crate) connect: Address,
    /// Text headers, in order.
    pub(crate) headers: Vec<(String, String)>,
    /// The body.
    pub(crate) body: Vec<u8>,
    /// Send a Signal (no Response expected) instead of a Request.
    pub(crate) signal: bool,
    /// Bound on every wait.
    pub(crate) timeout: Duration,
}

/// Runs `tofu send`; the Response goes to `out`: its text headers as
/// `name: value` lines, a blank line, then the body bytes as they are.
///
/// # Errors
///
/// See [`Failure`]: usage (bad header, body too large), connect, timeout, or
/// a lost connection / unexpected reply.
pub(crate) fn run(args: SendArgs, out: &mut dyn Write) -> Result<(), Failure> {
    if args.body.len() > MAX_SECTION_LEN {
        return Err(Failure::Usage(format!(
            "the body is {} bytes; a tofu message body holds at most {MAX_SECTION_LEN}",
            args.body.len()
        )));
    }
    let engine = Engine::new(Options::default())?;
    let session = Session::connect(&engine, &args.connect, args.timeout)?;
    let op = if args.signal {
        OpCode::Signal
    } else {
        OpCode::Request
    };
    let mut msg = session.message(op)?;
    for (name, value) in &args.headers {
        msg.text_headers.append(name, value).map_err(|e| {
            Failure::Usage(format!(
                "bad header '{name}:{value}': {e} (use --header NAME:VALUE)"
            ))
        })?;
    }
    msg.body = args.body;
    let id = session.post(msg)?;
    if !args.signal {
        let resp = session.wait_response(id)?;
        for (name, value) in resp.text_headers.iter() {
            writeln!(out, "{name}: {value}")?;
        }
        writeln!(out)?;
        out.write_all(&resp.body)?;
        out.flush()?;
        if resp.status() != Status::Success {
            let status = resp.status();
            session.close()?;
            return Err(Failure::Other(format!(
                "the server answered with status {status}"
            )));
        }
    }
    // The Bye handshake also guarantees a Signal reached the server.
    session.close()?;
    engine.shutdown();
    Ok(())
}
