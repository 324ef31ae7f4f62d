//! An echo server: accepts every HelloRequest, echoes every Request as a Response,
//! answers ByeRequest with ByeResponse.
//!
//! ```text
//! cargo run --example echo_server -- tcp|127.0.0.1|7099
//! cargo run --example echo_client -- tcp|127.0.0.1|7099
//! ```

use std::time::Duration;

use tofu::{Address, Engine, OpCode, Options, Status};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "tcp|127.0.0.1|7099".into());
    let addr = Address::parse_server(&addr)?;
    let engine = Engine::new(Options::default())?;
    let group = engine.create_group()?;

    group.listen(&addr)?;
    let ready = group
        .wait_receive(Some(Duration::from_secs(5)))?
        .ok_or("no WelcomeResponse")?;
    if ready.status() != Status::Success {
        return Err(format!("listen on {addr} failed: {}", ready.status()).into());
    }
    println!(
        "listening on {}",
        ready.text_headers.get("~listen_on").unwrap_or("?")
    );

    loop {
        let Some(mut msg) = group.wait_receive(None)? else {
            continue;
        };
        if msg.is_from_engine() {
            println!("channel {}: {}", msg.header.channel_number, msg.status());
            continue;
        }
        msg.header.proto.opcode = match msg.opcode() {
            OpCode::HelloRequest => OpCode::HelloResponse,
            OpCode::Request => OpCode::Response,
            OpCode::ByeRequest => OpCode::ByeResponse,
            _ => continue, // signals, responses: nothing to answer
        };
        if let Err(e) = group.post(msg) {
            eprintln!("post failed: {e}");
        }
    }
}
