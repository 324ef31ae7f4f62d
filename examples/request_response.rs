//! Request/response: the server answers every Request with a Response that
//! carries the same `message_id`; the client keeps several requests in flight and
//! matches the answers by id.
//!
//! `post` always sends status 0, so application-level failures travel in the
//! message itself — here an `error` text header on the Response.
//! Server and client each have their own engine, as two programs would, and
//! talk over TCP on 127.0.0.1.
//!
//! ```text
//! cargo run --example request_response
//! ```

use std::collections::HashMap;
use std::time::Duration;

use tofu::testing::free_tcp_port;
use tofu::{Address, Allocation, ChannelGroup, Engine, Message, OpCode, Options, Status};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Upper bound for every wait: a stuck example fails instead of hanging.
const WAIT: Option<Duration> = Some(Duration::from_secs(5));

fn main() -> Result<(), BoxError> {
    let port = free_tcp_port()?;

    // --- server: its own engine, one group, a listener -----------------------
    let server_engine = Engine::new(Options::default())?;
    let server = server_engine.create_group()?;
    server.listen(&Address::tcp_server("127.0.0.1", port))?;
    let ready = next(&server, "WelcomeResponse")?;
    if ready.status() != Status::Success {
        return Err(format!("listen failed: {}", ready.status()).into());
    }
    println!("server: listening on tcp|127.0.0.1|{port}");
    let server_thread = std::thread::spawn(move || serve(&server));

    // --- client: its own engine, connects ------------------------------------
    let engine = Engine::new(Options::default())?;
    let client = engine.create_group()?;
    let ch = client.connect(&Address::tcp_client("127.0.0.1", port))?;
    let reply = next(&client, "HelloResponse")?;
    if reply.is_from_engine() || reply.opcode() != OpCode::HelloResponse {
        return Err(format!("connect failed: {}", reply.status()).into());
    }
    println!("client: connected on channel {ch}");

    // Three requests in flight at once; message_id 0 lets the engine pick ids.
    let mut pending = HashMap::new();
    for (op, body) in [("upper", "hello tofu"), ("len", "hello tofu"), ("fly", "")] {
        let mut req = fresh(&engine)?;
        req.header.channel_number = ch; // opcode: Request is the default
        req.text_headers.append("op", op)?;
        req.body.extend_from_slice(body.as_bytes());
        let id = client.post(req)?.message_id;
        println!("client: request {id} op={op} body={body:?}");
        pending.insert(id, op);
    }

    while !pending.is_empty() {
        let resp = next(&client, "a Response")?;
        if resp.is_from_engine() {
            return Err(format!("engine report: {}", resp.status()).into());
        }
        assert_eq!(resp.opcode(), OpCode::Response);
        let op = pending
            .remove(&resp.header.message_id)
            .ok_or("response to an unknown message_id")?;
        let body = String::from_utf8_lossy(&resp.body);
        match resp.text_headers.get("error") {
            Some(e) => println!(
                "client: response {} ({op}) error: {e}",
                resp.header.message_id
            ),
            None => println!("client: response {} ({op}): {body}", resp.header.message_id),
        }
        match op {
            "upper" => assert_eq!(body, "HELLO TOFU"),
            "len" => assert_eq!(body, "10"),
            _ => assert_eq!(resp.text_headers.get("error"), Some("unknown op: fly")),
        }
    }

    // Graceful close: the server answers ByeResponse, then both sides get the
    // channel_closed report.
    let mut bye = fresh(&engine)?;
    bye.header.channel_number = ch;
    bye.header.proto.opcode = OpCode::ByeRequest;
    client.post(bye)?;
    let answer = next(&client, "ByeResponse")?;
    assert_eq!(answer.opcode(), OpCode::ByeResponse);
    let closed = next(&client, "channel_closed")?;
    assert!(closed.is_from_engine() && closed.status() == Status::ChannelClosed);
    println!("client: channel {ch} closed");

    let served = server_thread
        .join()
        .map_err(|_| "server thread panicked")??;
    assert_eq!(served, 3);
    println!("ok: 3 requests answered");
    Ok(())
}

/// Accepts one connection and answers its requests until it closes; returns how
/// many requests it answered.
fn serve(server: &ChannelGroup) -> Result<usize, BoxError> {
    let mut served = 0;
    loop {
        let mut m = next(server, "a request")?;
        if m.is_from_engine() {
            // Reports: the one that matters here is the channel's end.
            if m.status() == Status::ChannelClosed {
                println!("server: channel {} closed", m.channel_number());
                return Ok(served);
            }
            continue;
        }
        match m.opcode() {
            OpCode::HelloRequest => {
                // Accept: the same message, turned into the HelloResponse.
                m.header.proto.opcode = OpCode::HelloResponse;
                server.post(m)?;
            }
            OpCode::Request => {
                // Answer in place: same channel, same message_id.
                let op = m.text_headers.get("op").unwrap_or("").to_owned();
                let body = std::mem::take(&mut m.body);
                m.text_headers.clear();
                m.header.proto.opcode = OpCode::Response;
                match op.as_str() {
                    "upper" => m.body = body.to_ascii_uppercase(),
                    "len" => m.body = body.len().to_string().into_bytes(),
                    other => m
                        .text_headers
                        .append("error", &format!("unknown op: {other}"))?,
                }
                server.post(m)?;
                served += 1;
            }
            OpCode::ByeRequest => {
                m.header.proto.opcode = OpCode::ByeResponse;
                server.post(m)?;
            }
            _ => {}
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
