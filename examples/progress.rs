//! Progress signals: a long request is answered by progress Signals and then
//! the final Response, all with the request's `message_id`.
//!
//! Every message but the last of that id carries `more = More` ("more messages
//! with this message_id follow"); the final Response carries `More::Last`. So the
//! client reads until `!has_more()` and never needs an overall deadline: each
//! progress Signal shows the server is still working, and only the wait for the
//! *next* message is bounded.
//!
//! Server and client each have their own engine, as two programs would, and
//! talk over TCP on 127.0.0.1.
//!
//! ```text
//! cargo run --example progress
//! ```

use std::time::Duration;

use tofu::testing::free_tcp_port;
use tofu::{Address, Allocation, ChannelGroup, Engine, Message, More, OpCode, Options, Status};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Upper bound for every wait: a stuck example fails instead of hanging.
const WAIT: Option<Duration> = Some(Duration::from_secs(5));
/// Steps of the long job, and how long each one takes.
const STEPS: u32 = 5;
const STEP_TIME: Duration = Duration::from_millis(100);

fn main() -> Result<(), BoxError> {
    let port = free_tcp_port()?;

    let server_engine = Engine::new(Options::default())?;
    let server = server_engine.create_group()?;
    server.listen(&Address::tcp_server("127.0.0.1", port))?;
    let ready = next(&server, "WelcomeResponse")?;
    if ready.status() != Status::Success {
        return Err(format!("listen failed: {}", ready.status()).into());
    }
    let server_thread = std::thread::spawn(move || serve(&server));

    let engine = Engine::new(Options::default())?;
    let client = engine.create_group()?;
    let ch = client.connect(&Address::tcp_client("127.0.0.1", port))?;
    let reply = next(&client, "HelloResponse")?;
    if reply.is_from_engine() || reply.opcode() != OpCode::HelloResponse {
        return Err(format!("connect failed: {}", reply.status()).into());
    }

    let mut req = fresh(&engine)?;
    req.header.channel_number = ch;
    req.text_headers.append("job", "index")?;
    req.text_headers.append("steps", &STEPS.to_string())?;
    let id = client.post(req)?.message_id;
    println!("client: request {id} sent (job=index, {STEPS} steps)");

    let mut signals = 0;
    let result = loop {
        let m = next(&client, "progress or the result")?;
        if m.is_from_engine() {
            return Err(format!("engine report: {}", m.status()).into());
        }
        assert_eq!(
            m.header.message_id, id,
            "everything here answers request {id}"
        );
        match (m.opcode(), m.header.proto.more) {
            (OpCode::Signal, More::More) => {
                signals += 1;
                println!(
                    "client: progress {} (more follows)",
                    m.text_headers.get("progress").unwrap_or("?")
                );
            }
            (OpCode::Response, More::Last) => {
                break String::from_utf8_lossy(&m.body).into_owned();
            }
            other => return Err(format!("unexpected {other:?}").into()),
        }
    };
    println!("client: result (last): {result}");
    assert_eq!(signals, STEPS);
    assert_eq!(result, format!("index done in {STEPS} steps"));

    let mut bye = fresh(&engine)?;
    bye.header.channel_number = ch;
    bye.header.proto.opcode = OpCode::ByeRequest;
    client.post(bye)?;
    let answer = next(&client, "ByeResponse")?;
    assert_eq!(answer.opcode(), OpCode::ByeResponse);
    let closed = next(&client, "channel_closed")?;
    assert!(closed.is_from_engine() && closed.status() == Status::ChannelClosed);
    server_thread
        .join()
        .map_err(|_| "server thread panicked")??;
    println!("ok: {signals} progress signals, then the response");
    Ok(())
}

/// Accepts one connection, runs its jobs, returns when it closes.
fn serve(server: &ChannelGroup) -> Result<(), BoxError> {
    loop {
        let mut m = next(server, "a request")?;
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
            OpCode::Request => run_job(server, m)?,
            OpCode::ByeRequest => {
                m.header.proto.opcode = OpCode::ByeResponse;
                server.post(m)?;
            }
            _ => {}
        }
    }
}

/// The long job: one progress Signal per step, then the Response, all with the
/// request's channel and message_id.
fn run_job(server: &ChannelGroup, mut req: Message) -> Result<(), BoxError> {
    let job = req.text_headers.get("job").unwrap_or("job").to_owned();
    let steps: u32 = req
        .text_headers
        .get("steps")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    for step in 1..=steps {
        std::thread::sleep(STEP_TIME); // the work
        let mut signal = fresh(server.engine())?;
        signal.header.channel_number = req.header.channel_number;
        signal.header.message_id = req.header.message_id;
        signal.header.proto.opcode = OpCode::Signal;
        signal.header.proto.more = More::More; // the Response still follows
        signal
            .text_headers
            .append("progress", &format!("{}%", step * 100 / steps))?;
        server.post(signal)?;
    }
    // The request itself becomes the final Response (More::Last, the default).
    req.text_headers.clear();
    req.header.proto.opcode = OpCode::Response;
    req.body
        .extend_from_slice(format!("{job} done in {steps} steps").as_bytes());
    server.post(req)?;
    Ok(())
}

fn fresh(engine: &Engine) -> Result<Message, BoxError> {
    Ok(engine.get(Allocation::Always)?.ok_or("no message")?)
}

fn next(group: &ChannelGroup, what: &str) -> Result<Message, BoxError> {
    Ok(group
        .wait_receive(WAIT)?
        .ok_or_else(|| format!("timed out waiting for {what}"))?)
}
