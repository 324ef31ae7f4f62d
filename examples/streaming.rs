//! Streaming with `more`: one request, answered by a stream of responses that
//! share its message_id. Every response but the last has `more = More` ("more
//! messages with this message_id follow"); the last has `More::Last`. The client
//! reads until `has_more()` is false. The engine carries `more` and `message_id`
//! untouched: the stream is the applications' convention, in posting order.
//! Server and client run in one process (one engine, two groups), over TCP.
//!
//! ```text
//! cargo run --example streaming
//! ```

use std::time::Duration;

use tofu::testing::free_tcp_port;
use tofu::{Address, Allocation, Engine, More, OpCode, Options, Status};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
const WAIT: Option<Duration> = Some(Duration::from_secs(5));
const CHUNKS: usize = 5;

fn main() -> Result<(), BoxError> {
    let engine = Engine::new(Options::default())?;
    let server = engine.create_group()?;
    let client = engine.create_group()?;
    let port = free_tcp_port()?;

    server.listen(&Address::tcp_server("127.0.0.1", port))?;
    let ready = server.wait_receive(WAIT)?.ok_or("no WelcomeResponse")?;
    if ready.status() != Status::Success {
        return Err(format!("listen failed: {}", ready.status()).into());
    }

    // The server: accept, then answer each request with CHUNKS responses.
    let server_thread = std::thread::spawn(move || -> Result<(), BoxError> {
        loop {
            let mut m = server.wait_receive(WAIT)?.ok_or("server: timed out")?;
            if m.is_from_engine() {
                if m.status() == Status::ChannelClosed {
                    return Ok(());
                }
                continue;
            }
            match m.opcode() {
                OpCode::HelloRequest => {
                    m.header.proto.opcode = OpCode::HelloResponse;
                    server.post(m)?;
                }
                OpCode::Request => {
                    let (ch, id) = (m.header.channel_number, m.header.message_id);
                    let topic = String::from_utf8_lossy(&m.body).into_owned();
                    for i in 0..CHUNKS {
                        let mut part = server.engine().get(Allocation::Always)?.expect("message");
                        part.header.channel_number = ch;
                        part.header.message_id = id; // same id: one stream
                        part.header.proto.opcode = OpCode::Response;
                        part.header.proto.more = if i + 1 < CHUNKS {
                            More::More
                        } else {
                            More::Last
                        };
                        part.body.extend_from_slice(
                            format!("{topic}: part {}/{CHUNKS}", i + 1).as_bytes(),
                        );
                        server.post(part)?;
                    }
                }
                OpCode::ByeRequest => {
                    m.header.proto.opcode = OpCode::ByeResponse;
                    server.post(m)?;
                }
                _ => {}
            }
        }
    });

    let ch = client.connect(&Address::tcp_client("127.0.0.1", port))?;
    let r = client.wait_receive(WAIT)?.ok_or("no HelloResponse")?;
    if r.opcode() != OpCode::HelloResponse || r.is_from_engine() {
        return Err(format!("connect failed: {}", r.status()).into());
    }

    let mut req = engine.get(Allocation::Always)?.expect("message");
    req.header.channel_number = ch;
    req.body.extend_from_slice(b"weather");
    let id = client.post(req)?.message_id;
    let mut parts = 0;
    loop {
        let part = client.wait_receive(WAIT)?.ok_or("stream stalled")?;
        if part.is_from_engine() {
            return Err(format!("engine report: {}", part.status()).into());
        }
        assert_eq!(
            (part.opcode(), part.header.message_id),
            (OpCode::Response, id)
        );
        parts += 1;
        println!(
            "response {id} [{:?}]: {}",
            part.header.proto.more,
            String::from_utf8_lossy(&part.body)
        );
        if !part.has_more() {
            break;
        }
    }
    assert_eq!(parts, CHUNKS, "the stream ends with its last part");

    let mut bye = engine.get(Allocation::Always)?.expect("message");
    bye.header.channel_number = ch;
    bye.header.proto.opcode = OpCode::ByeRequest;
    client.post(bye)?;
    loop {
        let m = client.wait_receive(WAIT)?.ok_or("no close")?;
        if m.is_from_engine() && m.status() == Status::ChannelClosed {
            break;
        }
    }
    server_thread
        .join()
        .map_err(|_| "server thread panicked")??;
    println!("stream complete, channel closed");
    Ok(())
}
