//! `post` validation (SPEC §5.2): every rejection gives the message back
//! unchanged, and nothing rejected reaches the peer.

mod util;

use std::time::Duration;

use tofu::{
    Address, ChannelGroup, Engine, Error, MAX_SECTION_LEN, Message, More, OpCode, Origin, Status,
    TextHeaders,
};
use util::*;

struct Setup {
    engine: Engine,
    server: ChannelGroup,
    client: ChannelGroup,
    lch: u16,
    cch: u16,
    sch: u16,
}

fn setup() -> Setup {
    let engine = engine();
    let server = engine.create_group().unwrap();
    let client = engine.create_group().unwrap();
    let (saddr, caddr) = addresses(any_transport());
    let lch = listen(&engine, &server, &saddr);
    let (cch, sch) = connect_pair(&engine, &client, &server, &caddr);
    Setup {
        engine,
        server,
        client,
        lch,
        cch,
        sch,
    }
}

/// Posts `m` and expects `error`, with the message given back unchanged.
#[track_caller]
fn rejected(group: &ChannelGroup, m: Message, error: Error) {
    let before = m.clone();
    let pooled = m.is_pooled();
    let e = group.post(m).unwrap_err();
    assert_eq!(e.error, error, "for {before:?}");
    assert_eq!(e.message, before, "the message comes back unchanged");
    assert_eq!(e.message.is_pooled(), pooled);
    assert!(e.to_string().contains(&error.to_string()), "{e}");
    assert!(std::error::Error::source(&e).is_some());
}

fn with(
    s: &Setup,
    channel: u16,
    op: OpCode,
    id: u64,
    more: More,
    edit: impl FnOnce(&mut Message),
) -> Message {
    let mut m = msg(&s.engine, channel, op, b"body");
    m.header.message_id = id;
    m.header.proto.more = more;
    m.text_headers.append("k", "v").unwrap();
    edit(&mut m);
    m
}

#[test]
fn response_role_needs_a_message_id() {
    let s = setup();
    for op in [OpCode::Response, OpCode::HelloResponse, OpCode::ByeResponse] {
        rejected(
            &s.client,
            with(&s, s.cch, op, 0, More::Last, |_| {}),
            Error::InvalidMessageId,
        );
    }
    recv_nothing(&s.server, Duration::from_millis(50));
    recv_nothing(&s.client, Duration::from_millis(1));
}

#[test]
fn more_only_on_regular_messages() {
    let s = setup();
    for op in [
        OpCode::HelloResponse,
        OpCode::ByeRequest,
        OpCode::ByeResponse,
        OpCode::ByeSignal,
    ] {
        rejected(
            &s.client,
            with(&s, s.cch, op, 5, More::More, |_| {}),
            Error::InvalidMoreUsage,
        );
    }
    let (_, caddr) = addresses(Transport::Tcp);
    let mut hello = opening(&s.engine, &caddr);
    hello.header.proto.more = More::More;
    rejected(&s.client, hello, Error::InvalidMoreUsage);
    let mut welcome = opening(&s.engine, &Address::tcp_server("127.0.0.1", 0));
    welcome.header.proto.more = More::More;
    rejected(&s.server, welcome, Error::InvalidMoreUsage);
    recv_nothing(&s.server, Duration::from_millis(50));
    // The channel is intact: ByeSignal still works.
    abort(&s.engine, &s.client, s.cch);
}

#[test]
fn channel_zero_only_to_open() {
    let s = setup();
    for op in [
        OpCode::Request,
        OpCode::Response,
        OpCode::Signal,
        OpCode::HelloResponse,
        OpCode::ByeRequest,
        OpCode::ByeResponse,
        OpCode::ByeSignal,
    ] {
        rejected(
            &s.client,
            with(&s, 0, op, 9, More::Last, |_| {}),
            Error::InvalidChannelNumber,
        );
    }
}

#[test]
fn unknown_channel_numbers() {
    let s = setup();
    for ch in [4321, u16::MAX - 1, u16::MAX] {
        rejected(
            &s.client,
            with(&s, ch, OpCode::Request, 0, More::Last, |_| {}),
            Error::InvalidChannelNumber,
        );
    }
}

#[test]
fn channel_of_another_group() {
    let s = setup();
    // The server's end of the connection and its listener belong to the server group.
    for ch in [s.sch, s.lch] {
        rejected(
            &s.client,
            with(&s, ch, OpCode::Signal, 0, More::Last, |_| {}),
            Error::InvalidChannelGroup,
        );
        rejected(
            &s.client,
            with(&s, ch, OpCode::ByeSignal, 0, More::Last, |_| {}),
            Error::InvalidChannelGroup,
        );
    }
    rejected(
        &s.server,
        with(&s, s.cch, OpCode::Request, 0, More::Last, |_| {}),
        Error::InvalidChannelGroup,
    );
    // A third group owns nothing.
    let third = s.engine.create_group().unwrap();
    rejected(
        &third,
        with(&s, s.cch, OpCode::Request, 0, More::Last, |_| {}),
        Error::InvalidChannelGroup,
    );
    recv_nothing(&s.server, Duration::from_millis(50));
    round_trip(&s.engine, &s.client, &s.server, s.cch, s.sch, b"fine");
}

#[test]
fn opening_needs_an_address() {
    let s = setup();
    for op in [OpCode::HelloRequest, OpCode::WelcomeRequest] {
        rejected(
            &s.client,
            with(&s, 0, op, 0, More::Last, |m| m.text_headers.clear()),
            Error::WrongAddress,
        );
    }
}

#[test]
fn welcome_response_is_engine_only() {
    let s = setup();
    for ch in [0, s.lch] {
        rejected(
            &s.server,
            with(&s, ch, OpCode::WelcomeResponse, 3, More::Last, |_| {}),
            Error::InvalidOpCode,
        );
    }
}

#[test]
fn section_lengths() {
    let s = setup();
    rejected(
        &s.client,
        with(&s, s.cch, OpCode::Request, 0, More::Last, |m| {
            m.body = vec![7; MAX_SECTION_LEN + 1];
        }),
        Error::InvalidBodyLen,
    );
    // Text headers cannot even be built over the limit.
    let mut th = TextHeaders::new();
    th.append("a", &"x".repeat(MAX_SECTION_LEN - 5)).unwrap();
    assert_eq!(th.byte_len(), MAX_SECTION_LEN - 1);
    assert_eq!(th.append("b", "y"), Err(Error::InvalidHeadersLen));
    assert_eq!(th.byte_len(), MAX_SECTION_LEN - 1, "nothing appended");
    assert_eq!(
        th.set_raw("z".repeat(MAX_SECTION_LEN + 1)),
        Err(Error::InvalidHeadersLen)
    );
    // Exactly the limit is fine.
    let h = s
        .client
        .post(with(&s, s.cch, OpCode::Request, 0, More::Last, |m| {
            m.body = vec![7; MAX_SECTION_LEN];
        }))
        .unwrap();
    let got = recv(&s.server);
    assert_eq!(got.header.message_id, h.message_id);
    assert_eq!(got.body.len(), MAX_SECTION_LEN);
}

#[test]
fn post_assigns_ids_and_channels_and_forces_origin_and_status() {
    let s = setup();
    // message_id 0 is replaced by the next value of the process-wide counter.
    let a = s
        .client
        .post(with(&s, s.cch, OpCode::Request, 0, More::Last, |_| {}))
        .unwrap();
    let b = s
        .client
        .post(with(&s, s.cch, OpCode::Request, 0, More::Last, |_| {}))
        .unwrap();
    assert!(a.message_id >= 1 && b.message_id > a.message_id);
    assert_eq!(a.channel_number, s.cch);
    // A chosen id is kept.
    let c = s
        .client
        .post(with(&s, s.cch, OpCode::Request, 123_456, More::Last, |m| {
            m.header.proto.origin = Origin::Engine;
            m.header.status = Status::PoolEmpty as u8;
        }))
        .unwrap();
    assert_eq!(c.message_id, 123_456);
    assert_eq!(c.proto.origin, Origin::Application);
    assert_eq!(c.status, 0);
    for id in [a.message_id, b.message_id, 123_456] {
        let m = recv(&s.server);
        assert_eq!(m.header.message_id, id);
        assert!(m.is_from_application());
        assert_eq!(m.status(), Status::Success);
    }
    // Opening on channel 0 returns the new channel's number.
    let (_, caddr) = addresses(Transport::Tcp);
    let hello = s.client.post(opening(&s.engine, &caddr)).unwrap();
    assert!(hello.channel_number != 0 && hello.channel_number != u16::MAX);
    assert!(![s.lch, s.cch, s.sch].contains(&hello.channel_number));
    assert_ne!(hello.message_id, 0);
    assert_eq!(hello.proto.opcode, OpCode::HelloRequest);
    // (Nobody listens there: the attempt fails and is reported.)
    let back = recv(&s.client);
    assert_eq!(back.header.channel_number, hello.channel_number);
    assert_report(
        &recv(&s.client),
        hello.channel_number,
        Status::ChannelClosed,
    );
}
