//! A full conversation over TCP and UDS: hello, requests with headers and bodies
//! echoed, signals both ways, bye.

#[macro_use]
mod util;

use tofu::{OpCode, Status};
use util::*;

fn conversation(t: Transport) {
    let Connected {
        engine,
        server,
        client,
        cch,
        sch,
    } = connected(t);

    for i in 0..100u64 {
        let mut m = msg(
            &engine,
            cch,
            OpCode::Request,
            format!("body {i}").as_bytes(),
        );
        m.text_headers.append("seq", &i.to_string()).unwrap();
        let hdr = client.post(m).unwrap();
        let req = recv(&server);
        assert_eq!(req.opcode(), OpCode::Request);
        assert_eq!(req.header.channel_number, sch);
        assert_eq!(req.header.message_id, hdr.message_id);
        assert_eq!(req.text_headers.get("seq"), Some(i.to_string().as_str()));
        assert_eq!(req.body, format!("body {i}").as_bytes());
        let mut resp = req;
        resp.header.proto.opcode = OpCode::Response;
        server.post(resp).unwrap();
        let r = recv(&client);
        assert_eq!(r.opcode(), OpCode::Response);
        assert!(r.is_from_application());
        assert_eq!(r.header.channel_number, cch);
        assert_eq!(r.header.message_id, hdr.message_id);
        assert_eq!(r.body, format!("body {i}").as_bytes());
        assert_eq!(r.text_headers.get("seq"), Some(i.to_string().as_str()));
    }

    // Signals both ways.
    client
        .post(msg(&engine, cch, OpCode::Signal, b"c2s"))
        .unwrap();
    let s = recv(&server);
    assert_eq!(
        (s.opcode(), s.body.as_slice()),
        (OpCode::Signal, &b"c2s"[..])
    );
    server
        .post(msg(&engine, sch, OpCode::Signal, b"s2c"))
        .unwrap();
    let s = recv(&client);
    assert_eq!(
        (s.opcode(), s.body.as_slice()),
        (OpCode::Signal, &b"s2c"[..])
    );

    // Bye handshake initiated by the client.
    let bye = client
        .post(msg(&engine, cch, OpCode::ByeRequest, b""))
        .unwrap();
    let req = recv(&server);
    assert_eq!(req.opcode(), OpCode::ByeRequest);
    assert_eq!(req.header.message_id, bye.message_id);
    let mut resp = req;
    resp.header.proto.opcode = OpCode::ByeResponse;
    server.post(resp).unwrap();
    let r = recv(&client);
    assert_eq!(r.opcode(), OpCode::ByeResponse);
    assert!(r.is_from_application());
    let closed = recv(&client);
    assert_report(&closed, cch, Status::ChannelClosed);
    let closed = recv(&server);
    assert_report(&closed, sch, Status::ChannelClosed);
    // The channel numbers are gone.
    let e = client
        .post(msg(&engine, cch, OpCode::Signal, b""))
        .unwrap_err();
    assert_eq!(e.error, tofu::Error::InvalidChannelNumber);
    engine.shutdown();
}

tcp_and_uds!(conversation);
