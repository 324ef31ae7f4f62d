//! A clean shutdown with `update_receiver`: a server thread sits in
//! `wait_receive(None)` (blocked until something arrives); another thread talks
//! to it through its group's receive queue.
//!
//! * `update_receiver(Some(msg))` passes it work: `msg` arrives in the queue,
//!   FIFO with network traffic, with status `receiver_update` and
//!   `origin = Application`. Here: a notice to broadcast to every client.
//! * `update_receiver(None)` wakes it with a Signal with status `receiver_update`
//!   and `origin = Engine`. Here that means "stop": the server closes every
//!   channel gracefully (ByeRequest, the client answers ByeResponse, both get
//!   `channel_closed`) and its thread returns.
//! * The last resort, `Engine::shutdown`, wakes a blocked `wait_receive` with
//!   `Error::ShutdownStarted`; the watchdog below uses it only if the server
//!   thread does not finish in time.
//!
//! ```text
//! cargo run --example shutdown
//! ```

use std::collections::HashSet;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use tofu::testing::free_tcp_port;
use tofu::{Address, Allocation, ChannelGroup, Engine, Message, OpCode, Options, Status};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Upper bound for every wait in the main thread.
const WAIT: Option<Duration> = Some(Duration::from_secs(5));
const CLIENTS: usize = 2;

fn main() -> Result<(), BoxError> {
    let port = free_tcp_port()?;
    let server_engine = Engine::new(Options::default())?;
    let server = Arc::new(server_engine.create_group()?);
    server.listen(&Address::tcp_server("127.0.0.1", port))?;
    let ready = next(&server, "WelcomeResponse")?;
    if ready.status() != Status::Success {
        return Err(format!("listen failed: {}", ready.status()).into());
    }

    let (done_tx, done_rx) = mpsc::channel();
    {
        let server = server.clone();
        std::thread::spawn(move || {
            let _ = done_tx.send(serve(&server));
        });
    }

    // A client with two connections, each asking once.
    let engine = Engine::new(Options::default())?;
    let client = engine.create_group()?;
    let mut channels = Vec::new();
    for _ in 0..CLIENTS {
        let ch = client.connect(&Address::tcp_client("127.0.0.1", port))?;
        let reply = next(&client, "HelloResponse")?;
        assert_eq!(reply.opcode(), OpCode::HelloResponse, "{}", reply.status());
        let mut req = fresh(&engine)?;
        req.header.channel_number = ch;
        req.body.extend_from_slice(b"ping");
        client.post(req)?;
        let resp = next(&client, "Response")?;
        assert_eq!(
            (resp.opcode(), resp.body.as_slice()),
            (OpCode::Response, &b"ping"[..])
        );
        channels.push(ch);
    }
    println!("main:   {CLIENTS} clients served; the server thread now waits in wait_receive(None)");

    // Pass the server thread work: a notice for every client.
    let mut notice = fresh(&server_engine)?;
    notice.body.extend_from_slice(b"going down for maintenance");
    server.update_receiver(Some(notice))?;
    for _ in 0..CLIENTS {
        let m = next(&client, "the notice")?;
        assert_eq!(m.opcode(), OpCode::Signal);
        println!(
            "client: channel {}: notice: {}",
            m.channel_number(),
            String::from_utf8_lossy(&m.body)
        );
    }

    // Ask the server thread to stop; answer its ByeRequests.
    println!("main:   update_receiver(None): stop");
    server.update_receiver(None)?;
    let mut open: HashSet<u16> = channels.into_iter().collect();
    while !open.is_empty() {
        let mut m = next(&client, "the server's goodbye")?;
        if m.is_from_engine() {
            if m.status() == Status::ChannelClosed && open.remove(&m.channel_number()) {
                println!("client: channel {} closed", m.channel_number());
            }
            continue;
        }
        if m.opcode() == OpCode::ByeRequest {
            m.header.proto.opcode = OpCode::ByeResponse;
            client.post(m)?;
        }
    }

    // The watchdog: a thread that does not stop is woken by the engine's shutdown.
    let served = match done_rx.recv_timeout(Duration::from_secs(10)) {
        Ok(result) => result?,
        Err(_) => {
            server_engine.shutdown(); // wakes wait_receive with ShutdownStarted
            return Err("the server thread did not stop".into());
        }
    };
    assert_eq!(served, CLIENTS);
    server_engine.shutdown();
    assert!(matches!(
        server.wait_receive(None),
        Err(tofu::Error::ShutdownStarted)
    ));
    println!("ok: server thread stopped after closing {served} channels");
    Ok(())
}

/// The server thread: blocks in `wait_receive(None)` until told to stop, then
/// closes every channel gracefully. Returns how many channels it closed.
fn serve(server: &ChannelGroup) -> Result<usize, BoxError> {
    let mut open = HashSet::new();
    let mut stopping = false;
    let mut closed = 0;
    loop {
        let mut m = server.wait_receive(None)?.ok_or("no timeout was set")?;
        let ch = m.channel_number();
        if m.status() == Status::ReceiverUpdate {
            if m.is_from_engine() {
                // update_receiver(None): stop.
                println!("server: stop requested, closing {} channels", open.len());
                stopping = true;
                for &ch in &open {
                    let mut bye = fresh(server.engine())?;
                    bye.header.channel_number = ch;
                    bye.header.proto.opcode = OpCode::ByeRequest;
                    server.post(bye)?;
                }
            } else {
                // update_receiver(Some(msg)): work — broadcast the notice.
                println!(
                    "server: notice to broadcast: {}",
                    String::from_utf8_lossy(&m.body)
                );
                for &ch in &open {
                    let mut signal = fresh(server.engine())?;
                    signal.header.channel_number = ch;
                    signal.header.proto.opcode = OpCode::Signal;
                    signal.body.extend_from_slice(&m.body);
                    server.post(signal)?;
                }
            }
        } else if m.is_from_engine() {
            if m.status() == Status::ChannelClosed && open.remove(&ch) {
                closed += 1;
            }
        } else {
            match m.opcode() {
                OpCode::HelloRequest => {
                    open.insert(ch);
                    m.header.proto.opcode = OpCode::HelloResponse;
                    server.post(m)?;
                }
                OpCode::Request => {
                    m.header.proto.opcode = OpCode::Response;
                    server.post(m)?;
                }
                OpCode::ByeRequest => {
                    m.header.proto.opcode = OpCode::ByeResponse;
                    server.post(m)?;
                }
                _ => {} // e.g. the ByeResponses to our ByeRequests
            }
        }
        if stopping && open.is_empty() {
            return Ok(closed);
        }
    }
}

fn fresh(engine: &Engine) -> Result<Message, BoxError> {
    Ok(engine.get(Allocation::Always)?.ok_or("no message")?)
}

fn next(group: &ChannelGroup, what: &str) -> Result<Message, BoxError> {
    Ok(group
        .wait_receive(WAIT)?
        .ok_or_else(|| format!("timed out waiting for {what}"))?)
}
