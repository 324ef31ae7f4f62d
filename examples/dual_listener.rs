//! One server group listening on TCP and on a Unix-domain socket at once, with a
//! client on each.
//!
//! A group may own any number of listeners: post one WelcomeRequest per address.
//! Accepted connections from every listener land in that same group, so one
//! `wait_receive` loop serves them all. The client's HelloRequest arrives with
//! its `~connect_to` header, which tells the server which way the client came.
//! At the end the server closes both listeners with `ByeSignal`; closing the UDS
//! listener removes its socket file.
//!
//! ```text
//! cargo run --example dual_listener
//! ```

use std::collections::HashMap;
use std::time::Duration;

use tofu::testing::{free_tcp_port, temp_uds_path};
use tofu::{Address, Allocation, ChannelGroup, Engine, Message, OpCode, Options, Status};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Upper bound for every wait: a stuck example fails instead of hanging.
const WAIT: Option<Duration> = Some(Duration::from_secs(5));

fn main() -> Result<(), BoxError> {
    let tcp = Address::tcp_server("127.0.0.1", free_tcp_port()?);
    let uds = Address::uds_server(temp_uds_path());

    // The server: one engine, one group, two listeners.
    let server_engine = Engine::new(Options::default())?;
    let server = server_engine.create_group()?;
    let mut listeners = Vec::new();
    for addr in [&tcp, &uds] {
        let ch = server.listen(addr)?;
        let ready = next(&server, "WelcomeResponse")?;
        if ready.status() != Status::Success {
            return Err(format!("listen on {addr} failed: {}", ready.status()).into());
        }
        println!("server: listening on {addr} (listener channel {ch})");
        listeners.push(ch);
    }
    let server_thread = std::thread::spawn(move || -> Result<ChannelGroup, BoxError> {
        serve(&server, 2)?;
        Ok(server)
    });

    // The clients: their own engine, one group each, in parallel.
    let engine = Engine::new(Options::default())?;
    let answers = std::thread::scope(|s| {
        let over_tcp = s.spawn(|| ask(&engine, tcp.to_client()));
        let over_uds = s.spawn(|| ask(&engine, uds.to_client()));
        [over_tcp.join(), over_uds.join()]
    });
    for answer in answers {
        let answer = answer.map_err(|_| "client thread panicked")??;
        println!("client: {answer}");
    }

    // Close both listeners: each ByeSignal comes back, then the channel_closed report.
    let server = server_thread
        .join()
        .map_err(|_| "server thread panicked")??;
    for ch in listeners {
        let mut bye = fresh(server.engine())?;
        bye.header.channel_number = ch;
        bye.header.proto.opcode = OpCode::ByeSignal;
        server.post(bye)?;
        let back = next(&server, "the ByeSignal back")?;
        assert_eq!(
            (back.opcode(), back.status()),
            (OpCode::ByeSignal, Status::ChannelClosed)
        );
        let report = next(&server, "channel_closed")?;
        assert!(report.is_from_engine() && report.status() == Status::ChannelClosed);
        println!("server: listener channel {ch} closed");
    }
    if let Address::UdsServer { path } = &uds {
        assert!(!path.exists(), "the UDS socket file is removed");
    }
    println!("ok: one group served TCP and UDS clients");
    Ok(())
}

/// Serves until `clients` connections have closed: answers each Request with
/// its body and the way the client came in.
fn serve(server: &ChannelGroup, clients: usize) -> Result<(), BoxError> {
    let mut came_by: HashMap<u16, String> = HashMap::new();
    let mut closed = 0;
    while closed < clients {
        let mut m = next(server, "a client")?;
        let ch = m.channel_number();
        if m.is_from_engine() {
            if m.status() == Status::ChannelClosed && came_by.remove(&ch).is_some() {
                closed += 1;
            }
            continue;
        }
        match m.opcode() {
            OpCode::HelloRequest => {
                let from = m.text_headers.get("~connect_to").unwrap_or("?").to_owned();
                println!("server: channel {ch} accepted, client connected to {from}");
                came_by.insert(ch, from);
                m.header.proto.opcode = OpCode::HelloResponse;
                server.post(m)?;
            }
            OpCode::Request => {
                let from = came_by.get(&ch).map_or("?", String::as_str);
                let text = format!("{} (via {from})", String::from_utf8_lossy(&m.body));
                m.body.clear();
                m.body.extend_from_slice(text.as_bytes());
                m.header.proto.opcode = OpCode::Response;
                server.post(m)?;
            }
            OpCode::ByeRequest => {
                m.header.proto.opcode = OpCode::ByeResponse;
                server.post(m)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Connects to `addr` in a group of its own, asks once, closes with Bye.
fn ask(engine: &Engine, addr: Address) -> Result<String, BoxError> {
    let group = engine.create_group()?;
    let ch = group.connect(&addr)?;
    let reply = next(&group, "HelloResponse")?;
    if reply.is_from_engine() || reply.opcode() != OpCode::HelloResponse {
        return Err(format!("connect to {addr} failed: {}", reply.status()).into());
    }

    let mut req = fresh(engine)?;
    req.header.channel_number = ch;
    req.body.extend_from_slice(b"hello");
    let id = group.post(req)?.message_id;
    let resp = next(&group, "Response")?;
    assert_eq!(
        (resp.opcode(), resp.header.message_id),
        (OpCode::Response, id)
    );
    let answer = String::from_utf8_lossy(&resp.body).into_owned();
    assert_eq!(answer, format!("hello (via {addr})"));

    let mut bye = fresh(engine)?;
    bye.header.channel_number = ch;
    bye.header.proto.opcode = OpCode::ByeRequest;
    group.post(bye)?;
    let bye_back = next(&group, "ByeResponse")?;
    assert_eq!(bye_back.opcode(), OpCode::ByeResponse);
    let closed = next(&group, "channel_closed")?;
    assert!(closed.is_from_engine() && closed.status() == Status::ChannelClosed);
    Ok(answer)
}

fn fresh(engine: &Engine) -> Result<Message, BoxError> {
    Ok(engine.get(Allocation::Always)?.ok_or("no message")?)
}

fn next(group: &ChannelGroup, what: &str) -> Result<Message, BoxError> {
    Ok(group
        .wait_receive(WAIT)?
        .ok_or_else(|| format!("timed out waiting for {what}"))?)
}
