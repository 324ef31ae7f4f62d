//! Async echo on tokio: the server is a task that receives with
//! `ChannelGroup::messages()` and answers every Request; the client is a task
//! that posts requests and awaits each answer with `receive_async()` under a
//! `tokio::time::timeout`. Both run on one multi-threaded runtime, each with
//! its own engine, over TCP on 127.0.0.1; the example checks every answer
//! and exits non-zero on any failure.
//!
//! tofu depends on no runtime: the engine wakes the tasks through their
//! `Waker`s, so the same code runs on any executor.
//!
//! ```text
//! cargo run --example async_echo
//! ```

use std::pin::pin;
use std::time::Duration;

use futures_core::Stream;
use tofu::testing::free_tcp_port;
use tofu::{Address, Allocation, ChannelGroup, Engine, Message, OpCode, Options, Status};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Upper bound for every wait: a stuck example fails instead of hanging.
const WAIT: Duration = Duration::from_secs(5);
/// Requests the client sends.
const ROUNDS: usize = 100;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let port = free_tcp_port()?;

    // --- server: its own engine, one group, a listener -----------------------
    let server_engine = Engine::new(Options::default())?;
    let server = server_engine.create_group()?;
    let mut welcome = fresh(&server_engine)?;
    Address::tcp_server("127.0.0.1", port).format(&mut welcome)?;
    server.post(welcome)?;
    let ready = next(&server, "WelcomeResponse").await?;
    if ready.status() != Status::Success {
        return Err(format!("listen failed: {}", ready.status()).into());
    }
    println!("server: listening on tcp|127.0.0.1|{port}");
    let server_task = tokio::spawn(async move { serve(&server).await });

    // --- client: its own engine, connects, echoes ---------------------------
    let engine = Engine::new(Options::default())?;
    let client = engine.create_group()?;
    let mut hello = fresh(&engine)?;
    Address::tcp_client("127.0.0.1", port).format(&mut hello)?;
    let ch = client.post(hello)?.channel_number;
    let reply = next(&client, "HelloResponse").await?;
    if reply.is_from_engine() || reply.opcode() != OpCode::HelloResponse {
        return Err(format!("connect failed: {}", reply.status()).into());
    }
    println!("client: connected on channel {ch}");

    for i in 0..ROUNDS {
        let mut req = fresh(&engine)?;
        req.header.channel_number = ch; // opcode: Request is the default
        req.body.extend_from_slice(format!("ping {i}").as_bytes());
        let id = client.post(req)?.message_id;
        let resp = next(&client, "a Response").await?;
        if resp.is_from_engine() || resp.opcode() != OpCode::Response {
            return Err(format!("unexpected answer: {resp:?}").into());
        }
        if resp.header.message_id != id || resp.body != format!("PING {i}").as_bytes() {
            return Err(format!("wrong answer to request {i}: {resp:?}").into());
        }
    }
    println!("client: {ROUNDS} requests answered");

    // Close the channel gracefully: the server sees it closed and stops.
    let mut bye = fresh(&engine)?;
    bye.header.channel_number = ch;
    bye.header.proto.opcode = OpCode::ByeRequest;
    client.post(bye)?;
    let answered = tokio::time::timeout(WAIT, server_task).await???;
    println!("server: answered {answered} requests, stopped");
    if answered != ROUNDS {
        return Err(format!("the server answered {answered} requests, not {ROUNDS}").into());
    }
    println!("async_echo: ok");
    Ok(())
}

/// The server: answers Requests (upper-cased), accepts connections and Byes,
/// and returns the number of answers once its client's channel closed.
async fn serve(server: &ChannelGroup) -> Result<usize, BoxError> {
    let mut messages = pin!(server.messages());
    let mut answered = 0;
    loop {
        let next = std::future::poll_fn(|cx| messages.as_mut().poll_next(cx));
        let mut m = match tokio::time::timeout(WAIT, next).await {
            Ok(Some(m)) => m?,
            Ok(None) => return Err("the engine shut down".into()),
            Err(_) => return Err("the server waited too long".into()),
        };
        if m.is_from_engine() {
            if m.status() == Status::ChannelClosed {
                return Ok(answered);
            }
            continue; // another report: not expected here, harmless
        }
        m.header.proto.opcode = match m.opcode() {
            OpCode::HelloRequest => OpCode::HelloResponse,
            OpCode::ByeRequest => OpCode::ByeResponse,
            OpCode::Request => {
                answered += 1;
                m.body.make_ascii_uppercase();
                OpCode::Response
            }
            _ => continue,
        };
        server.post(m)?;
    }
}

/// The group's next message, or an error after [`WAIT`].
async fn next(group: &ChannelGroup, what: &str) -> Result<Message, BoxError> {
    match tokio::time::timeout(WAIT, group.receive_async()).await {
        Ok(got) => Ok(got?),
        Err(_) => Err(format!("no {what} within {WAIT:?}").into()),
    }
}

/// A message from the engine's pool (or a new one).
fn fresh(engine: &Engine) -> Result<Message, BoxError> {
    Ok(engine
        .get(Allocation::Always)?
        .ok_or("Allocation::Always returned no message")?)
}
