//! An echo client (SPEC §6): connects, sends a few requests, closes with Bye.
//!
//! Start `cargo run --example echo_server` first.

use std::time::Duration;

use tofu::{Address, Allocation, Engine, OpCode, Options, Status};

const TIMEOUT: Option<Duration> = Some(Duration::from_secs(5));

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tcp|127.0.0.1|7099".into());
    let addr: Address = addr.parse()?;
    let engine = Engine::new(Options::default())?;
    let group = engine.create_group()?;

    let ch = group.connect(&addr)?;
    let reply = group.wait_receive(TIMEOUT)?.ok_or("timeout")?;
    if !(reply.is_from_application() && reply.opcode() == OpCode::HelloResponse) {
        return Err(format!("connect to {addr} failed: {}", reply.status()).into());
    }
    println!("connected on channel {ch}");

    for i in 0..3 {
        let mut req = engine.get(Allocation::Always)?.expect("message");
        req.header.channel_number = ch;
        req.text_headers.append("n", &i.to_string())?;
        req.body.extend_from_slice(format!("hello #{i}").as_bytes());
        let id = group.post(req)?.message_id;
        let resp = group.wait_receive(TIMEOUT)?.ok_or("timeout")?;
        assert_eq!(resp.header.message_id, id);
        println!("response {}: {}", id, String::from_utf8_lossy(&resp.body));
    }

    let mut bye = engine.get(Allocation::Always)?.expect("message");
    bye.header.channel_number = ch;
    bye.header.proto.opcode = OpCode::ByeRequest;
    group.post(bye)?;
    loop {
        let m = group.wait_receive(TIMEOUT)?.ok_or("timeout")?;
        if m.is_from_engine() && m.status() == Status::ChannelClosed {
            println!("closed");
            return Ok(());
        }
    }
}
