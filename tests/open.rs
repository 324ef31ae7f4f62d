//! Opening channels (SPEC §5.3): listeners and their failures, connects and their
//! failures, messages queued behind a HelloRequest, UDS socket files, IPv6.

#[macro_use]
mod util;

use std::collections::HashSet;
use std::time::Duration;

use tofu::testing::{free_tcp_port, temp_uds_path};
use tofu::{Address, Allocation, Engine, Error, OpCode, Status};
use util::*;

// ----- connect failures --------------------------------------------------------

/// Posts a HelloRequest to `addr` and up to `extra` requests behind it, then
/// checks that the hello and every request `post` accepted come back in order
/// with `origin = Engine` and `status`, followed by one `channel_closed` report.
/// Returns how many requests were queued (accepted by `post`).
#[track_caller]
fn failed_connect(addr: &Address, status: Status, extra: usize) -> usize {
    let engine = engine();
    let group = engine.create_group().unwrap();
    let hello = opening(&engine, addr);
    let sent_headers = hello.text_headers.clone();
    let h = group.post(hello).expect("post hello");
    let ch = h.channel_number;
    assert_ne!(ch, 0);
    let mut queued = Vec::new();
    for i in 0..extra {
        let m = msg(&engine, ch, OpCode::Request, format!("q{i}").as_bytes());
        match group.post(m) {
            Ok(hdr) => queued.push(hdr.message_id),
            Err(e) => {
                // Only once the failure has happened: the number is gone.
                assert_eq!(e.error, Error::InvalidChannelNumber);
                assert_eq!(e.message.body, format!("q{i}").as_bytes());
                break;
            }
        }
    }

    let back = recv(&group);
    assert_returned(&back, OpCode::HelloRequest, ch, status);
    assert_eq!(back.header.message_id, h.message_id);
    assert_eq!(
        back.text_headers, sent_headers,
        "hello comes back unchanged"
    );
    for (i, id) in queued.iter().enumerate() {
        let m = recv(&group);
        assert!(
            !(m.is_from_engine() && m.opcode() == OpCode::Signal),
            "queued request #{i} must come back before the report, got {m:?}"
        );
        assert_returned(&m, OpCode::Request, ch, status);
        assert_eq!(
            m.header.message_id, *id,
            "queued messages come back in order"
        );
        assert_eq!(m.body, format!("q{i}").as_bytes());
    }
    let rep = recv(&group);
    assert_report(&rep, ch, Status::ChannelClosed);
    recv_nothing(&group, Duration::from_millis(50));
    // The application forgets the number: so does the engine.
    let e = group
        .post(msg(&engine, ch, OpCode::Signal, b""))
        .unwrap_err();
    assert_eq!(e.error, Error::InvalidChannelNumber);
    engine.shutdown();
    queued.len()
}

/// Runs [`failed_connect`] with 10 queued requests until at least one run got
/// some requests queued before the failure (the failure races with `post`).
#[track_caller]
fn failed_connect_with_queue(addr: impl Fn() -> Address, status: Status) {
    for _ in 0..20 {
        if failed_connect(&addr(), status, 10) > 0 {
            return;
        }
    }
    panic!("the failure always won the race against post: nothing was queued");
}

#[test]
fn connect_to_closed_tcp_port_fails() {
    let port = free_tcp_port().unwrap();
    failed_connect(
        &Address::tcp_client("127.0.0.1", port),
        Status::ConnectFailed,
        0,
    );
}

#[test]
fn connect_to_unresolvable_host_fails() {
    failed_connect(
        &Address::tcp_client("no-such-host.invalid", 7099),
        Status::ConnectFailed,
        0,
    );
}

#[test]
fn connect_to_missing_uds_path_fails() {
    if tofu::testing::uds_not_applicable() {
        return;
    }
    failed_connect(
        &Address::uds_client(temp_uds_path()),
        Status::UdsPathNotFound,
        0,
    );
}

#[test]
fn connect_to_unparsable_address_fails() {
    let engine = engine();
    let mut hello = engine.get(Allocation::Always).unwrap().unwrap();
    hello.header.proto.opcode = OpCode::HelloRequest;
    hello.text_headers.append("~connect_to", "garbage").unwrap();
    let group = engine.create_group().unwrap();
    let h = group
        .post(hello)
        .expect("post validates the presence, not the syntax");
    let back = recv(&group);
    assert_returned(
        &back,
        OpCode::HelloRequest,
        h.channel_number,
        Status::InvalidAddress,
    );
    assert_eq!(back.text_headers.get("~connect_to"), Some("garbage"));
    assert_report(&recv(&group), h.channel_number, Status::ChannelClosed);
}

#[test]
fn connect_failure_returns_queued_messages_closed_port() {
    failed_connect_with_queue(
        || Address::tcp_client("127.0.0.1", free_tcp_port().unwrap()),
        Status::ConnectFailed,
    );
}

#[test]
fn connect_failure_returns_queued_messages_bad_host() {
    failed_connect_with_queue(
        || Address::tcp_client("no-such-host.invalid", 7099),
        Status::ConnectFailed,
    );
}

#[test]
fn connect_failure_returns_queued_messages_missing_uds_path() {
    if tofu::testing::uds_not_applicable() {
        return;
    }
    failed_connect_with_queue(
        || Address::uds_client(temp_uds_path()),
        Status::UdsPathNotFound,
    );
}

// ----- listener failures -------------------------------------------------------

/// Posts a WelcomeRequest and expects it back as a failed WelcomeResponse with
/// `status`; the channel is then gone.
#[track_caller]
fn failed_listen(engine: &Engine, welcome: tofu::Message, status: Status) {
    let group = engine.create_group().unwrap();
    let id = welcome.header.message_id;
    let h = group.post(welcome).expect("post welcome");
    let r = recv(&group);
    assert_returned(&r, OpCode::WelcomeResponse, h.channel_number, status);
    if id != 0 {
        assert_eq!(r.header.message_id, id);
    }
    assert_eq!(r.header.message_id, h.message_id);
    recv_nothing(&group, Duration::from_millis(50));
    let e = group
        .post(msg(engine, h.channel_number, OpCode::ByeSignal, b""))
        .unwrap_err();
    assert_eq!(e.error, Error::InvalidChannelNumber, "the listener is gone");
}

#[test]
fn listen_on_address_in_use_fails() {
    let engine = engine();
    let group = engine.create_group().unwrap();
    let (saddr, caddr) = addresses(Transport::Tcp);
    listen(&engine, &group, &saddr);
    failed_listen(&engine, opening(&engine, &saddr), Status::ListenFailed);
    // The first listener is unaffected.
    let client = engine.create_group().unwrap();
    connect_pair(&engine, &client, &group, &caddr);
}

/// Another engine (as another process would) cannot listen on a port that a
/// tofu listener uses, and the first listener goes on working.
#[test]
fn listen_on_port_of_another_engines_listener_fails() {
    let first = engine();
    let group = first.create_group().unwrap();
    let (saddr, caddr) = addresses(Transport::Tcp);
    listen(&first, &group, &saddr);
    let second = engine();
    failed_listen(&second, opening(&second, &saddr), Status::ListenFailed);
    let client = first.create_group().unwrap();
    connect_pair(&first, &client, &group, &caddr);
}

/// No socket hijacking: a listen on a port that another program's socket
/// listens on fails, on every platform. On Windows this holds because tofu
/// does not set SO_REUSEADDR there (it would let the listen take the port
/// over); the socket here is std's, which sets no option on Windows. Wine
/// gives SO_REUSEADDR Linux's meaning, so the Windows lane passes this with
/// or without the option: only a real Windows tells them apart.
#[test]
fn listen_on_port_bound_by_another_process_socket_fails() {
    let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = std_listener.local_addr().unwrap().port();
    let engine = engine();
    failed_listen(
        &engine,
        opening(&engine, &Address::tcp_server("127.0.0.1", port)),
        Status::ListenFailed,
    );
}

#[test]
fn listen_on_foreign_address_fails() {
    // TEST-NET-1 (RFC 5737): never assigned to this host.
    let engine = engine();
    let port = free_tcp_port().unwrap();
    failed_listen(
        &engine,
        opening(&engine, &Address::tcp_server("192.0.2.1", port)),
        Status::ListenFailed,
    );
}

#[test]
fn listen_on_unparsable_address_fails() {
    let engine = engine();
    let mut m = engine.get(Allocation::Always).unwrap().unwrap();
    m.header.proto.opcode = OpCode::WelcomeRequest;
    m.text_headers.append("~listen_on", "garbage").unwrap();
    failed_listen(&engine, m, Status::InvalidAddress);

    // A host with a space in it is no host.
    let mut m = engine.get(Allocation::Always).unwrap().unwrap();
    m.header.proto.opcode = OpCode::WelcomeRequest;
    m.header.message_id = 4242;
    m.text_headers
        .append("~listen_on", "tcp|local host|0")
        .unwrap();
    failed_listen(&engine, m, Status::InvalidAddress);
}

#[test]
fn listen_without_listen_on_header_fails() {
    let engine = engine();
    let mut m = engine.get(Allocation::Always).unwrap().unwrap();
    m.header.proto.opcode = OpCode::WelcomeRequest;
    m.text_headers.append("x-other", "value").unwrap();
    failed_listen(&engine, m, Status::WrongAddress);
}

#[test]
fn listen_on_port_zero_reports_the_bound_port() {
    let engine = engine();
    let server = engine.create_group().unwrap();
    let h = server
        .post(opening(&engine, &Address::tcp_server("127.0.0.1", 0)))
        .unwrap();
    let r = recv(&server);
    assert_eq!(r.opcode(), OpCode::WelcomeResponse);
    assert_eq!(r.status(), Status::Success, "{r:?}");
    assert!(r.is_from_application());
    assert_eq!(r.header.channel_number, h.channel_number);
    assert_eq!(r.header.message_id, h.message_id);
    let bound = Address::parse_server(r.text_headers.get("~listen_on").unwrap()).unwrap();
    let Address::TcpServer { port, .. } = bound else {
        panic!("{bound:?}")
    };
    assert_ne!(port, 0);
    let client = engine.create_group().unwrap();
    connect_pair(
        &engine,
        &client,
        &server,
        &Address::tcp_client("127.0.0.1", port),
    );
}

#[test]
fn listener_can_be_restarted_on_the_same_port_at_once() {
    let engine = engine();
    let (saddr, caddr) = addresses(Transport::Tcp);
    for _ in 0..3 {
        let server = engine.create_group().unwrap();
        let client = engine.create_group().unwrap();
        listen(&engine, &server, &saddr);
        let (cch, sch) = connect_pair(&engine, &client, &server, &caddr);
        round_trip(&engine, &client, &server, cch, sch, b"x");
        // Destroying both groups closes the connection and the listener.
        server.destroy().unwrap();
        client.destroy().unwrap();
    }
}

// ----- UDS socket files ----------------------------------------------------------

#[test]
fn uds_stale_socket_file_is_replaced() {
    if tofu::testing::uds_not_applicable() {
        return;
    }
    let path = temp_uds_path();
    drop(raw_uds_listener(&path)); // closes the listener, leaves its file
    assert!(path.exists(), "the stale socket file is left behind");
    let engine = engine();
    let server = engine.create_group().unwrap();
    let client = engine.create_group().unwrap();
    listen(&engine, &server, &Address::uds_server(&path));
    let (cch, sch) = connect_pair(&engine, &client, &server, &Address::uds_client(&path));
    round_trip(&engine, &client, &server, cch, sch, b"stale");
}

/// SPEC §5.3 removes a *stale* socket file; a live listener's path is not
/// stale, and taking it over would silently cut the first listener off.
#[test]
fn uds_listen_on_live_socket_path_fails() {
    if tofu::testing::uds_not_applicable() {
        return;
    }
    let path = temp_uds_path();
    let engine = engine();
    let first = engine.create_group().unwrap();
    listen(&engine, &first, &Address::uds_server(&path));
    let other = tofu::Engine::new(tofu::Options::default()).unwrap();
    failed_listen(
        &other,
        opening(&other, &Address::uds_server(&path)),
        Status::ListenFailed,
    );
    // The first listener still owns the path.
    let client = engine.create_group().unwrap();
    connect_pair(&engine, &client, &first, &Address::uds_client(&path));
}

#[test]
fn uds_listen_on_regular_file_fails_and_keeps_it() {
    if tofu::testing::uds_not_applicable() {
        return;
    }
    let path = temp_uds_path();
    std::fs::write(&path, b"precious").unwrap();
    let engine = engine();
    failed_listen(
        &engine,
        opening(&engine, &Address::uds_server(&path)),
        Status::ListenFailed,
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn uds_socket_file_removed_when_listener_closes() {
    if tofu::testing::uds_not_applicable() {
        return;
    }
    let path = temp_uds_path();
    let engine = engine();
    let server = engine.create_group().unwrap();
    let lch = listen(&engine, &server, &Address::uds_server(&path));
    assert!(path.exists());
    let bye = server
        .post(msg(&engine, lch, OpCode::ByeSignal, b""))
        .unwrap();
    let back = recv(&server);
    assert_returned(&back, OpCode::ByeSignal, lch, Status::ChannelClosed);
    assert_eq!(back.header.message_id, bye.message_id);
    assert_report(&recv(&server), lch, Status::ChannelClosed);
    assert!(!path.exists(), "socket file removed with the listener");
    // Nobody listens any more.
    let client = engine.create_group().unwrap();
    let h = client
        .post(opening(&engine, &Address::uds_client(&path)))
        .unwrap();
    assert_returned(
        &recv(&client),
        OpCode::HelloRequest,
        h.channel_number,
        Status::UdsPathNotFound,
    );
}

#[test]
fn uds_socket_file_removed_when_group_destroyed() {
    if tofu::testing::uds_not_applicable() {
        return;
    }
    let path = temp_uds_path();
    let engine = engine();
    let server = engine.create_group().unwrap();
    listen(&engine, &server, &Address::uds_server(&path));
    assert!(path.exists());
    server.destroy().unwrap();
    assert!(
        !path.exists(),
        "destroy returns after the listener is closed"
    );
}

#[test]
fn uds_socket_file_removed_when_engine_shuts_down() {
    if tofu::testing::uds_not_applicable() {
        return;
    }
    let path = temp_uds_path();
    let engine = engine();
    let server = engine.create_group().unwrap();
    listen(&engine, &server, &Address::uds_server(&path));
    assert!(path.exists());
    engine.shutdown();
    assert!(
        !path.exists(),
        "shutdown returns after closing every socket"
    );
}

// ----- messages queued behind the HelloRequest ----------------------------------

fn queued_behind_hello(t: Transport) {
    let engine = engine();
    let server = engine.create_group().unwrap();
    let client = engine.create_group().unwrap();
    let (saddr, caddr) = addresses(t);
    listen(&engine, &server, &saddr);

    let hello = client.post(opening(&engine, &caddr)).unwrap();
    let cch = hello.channel_number;
    let mut ids = Vec::new();
    for i in 0..10u8 {
        let h = client
            .post(msg(&engine, cch, OpCode::Request, &[i]))
            .expect("post behind the hello");
        assert_eq!(h.channel_number, cch);
        ids.push(h.message_id);
    }
    let req = recv(&server);
    assert_eq!(req.opcode(), OpCode::HelloRequest, "{req:?}");
    assert_eq!(req.header.message_id, hello.message_id);
    let sch = req.header.channel_number;
    // The requests follow the hello, in order, even before the server answers.
    for (i, id) in ids.iter().enumerate() {
        let m = recv(&server);
        assert_eq!(m.opcode(), OpCode::Request, "{m:?}");
        assert_eq!(m.header.channel_number, sch);
        assert_eq!(m.header.message_id, *id);
        assert_eq!(m.body, [i as u8]);
        let mut resp = m;
        resp.header.proto.opcode = OpCode::Response;
        if i == 0 {
            let mut accept = req.clone();
            accept.header.proto.opcode = OpCode::HelloResponse;
            server.post(accept).unwrap();
        }
        server.post(resp).unwrap();
    }
    let r = recv(&client);
    assert_eq!(r.opcode(), OpCode::HelloResponse, "{r:?}");
    for (i, id) in ids.iter().enumerate() {
        let m = recv(&client);
        assert_eq!(m.opcode(), OpCode::Response, "{m:?}");
        assert_eq!(m.header.message_id, *id);
        assert_eq!(m.body, [i as u8]);
    }
}

tcp_and_uds!(queued_behind_hello);

// ----- channel numbers -------------------------------------------------------------

fn channel_numbers_not_reused_soon(t: Transport) {
    let engine = engine();
    let server = engine.create_group().unwrap();
    let client = engine.create_group().unwrap();
    let (saddr, caddr) = addresses(t);
    let lch = listen(&engine, &server, &saddr);
    let mut seen = HashSet::from([lch]);
    for _ in 0..40 {
        let (cch, sch) = connect_pair(&engine, &client, &server, &caddr);
        assert!(seen.insert(cch), "client number {cch} reused");
        assert!(seen.insert(sch), "server number {sch} reused");
        assert!(cch != 0 && cch != u16::MAX && sch != 0 && sch != u16::MAX);
        client
            .post(msg(&engine, cch, OpCode::ByeSignal, b""))
            .unwrap();
        assert_returned(
            &recv(&client),
            OpCode::ByeSignal,
            cch,
            Status::ChannelClosed,
        );
        assert_report(&recv(&client), cch, Status::ChannelClosed);
        assert_report(&recv(&server), sch, Status::ChannelClosed);
    }
}

tcp_and_uds!(channel_numbers_not_reused_soon);

// ----- IPv6 ------------------------------------------------------------------------

#[test]
fn ipv6_loopback_round_trip() {
    // SPEC §5.3 requires IPv6: a host without ::1 fails this test, loudly.
    let port = std::net::TcpListener::bind("[::1]:0")
        .expect("binding [::1] (IPv6 loopback) must work on the test host")
        .local_addr()
        .unwrap()
        .port();
    let engine = engine();
    let server = engine.create_group().unwrap();
    let client = engine.create_group().unwrap();
    listen(&engine, &server, &Address::tcp_server("::1", port));
    let caddr: Address = format!("tcp|::1|{port}").parse().unwrap();
    let (cch, sch) = connect_pair(&engine, &client, &server, &caddr);
    round_trip(&engine, &client, &server, cch, sch, b"v6");
}

/// A host name goes through the resolver (off the I/O thread); `localhost` may
/// resolve to ::1 first, where nothing listens, so the engine must fall back to
/// the next address.
#[test]
fn connect_by_host_name() {
    let port = free_tcp_port().unwrap();
    let engine = engine();
    let server = engine.create_group().unwrap();
    let client = engine.create_group().unwrap();
    listen(&engine, &server, &Address::tcp_server("127.0.0.1", port));
    let caddr = Address::tcp_client("localhost", port);
    let (cch, sch) = connect_pair(&engine, &client, &server, &caddr);
    round_trip(&engine, &client, &server, cch, sch, b"by name");
}

/// Many connects by host name at once: lookups run a few at a time (bounded
/// threads), the rest wait their turn, and every one completes.
#[test]
fn many_connects_by_host_name() {
    const CLIENTS: usize = 20;
    let port = free_tcp_port().unwrap();
    let engine = engine();
    let server = engine.create_group().unwrap();
    let client = engine.create_group().unwrap();
    listen(&engine, &server, &Address::tcp_server("127.0.0.1", port));
    let mut channels = HashSet::new();
    for _ in 0..CLIENTS {
        let mut hello = engine.get(Allocation::Always).unwrap().unwrap();
        Address::tcp_client("localhost", port)
            .format(&mut hello)
            .unwrap();
        channels.insert(client.post(hello).unwrap().channel_number);
    }
    for _ in 0..CLIENTS {
        let mut req = recv(&server);
        assert_eq!(req.opcode(), OpCode::HelloRequest, "{req:?}");
        req.header.proto.opcode = OpCode::HelloResponse;
        server.post(req).unwrap();
    }
    for _ in 0..CLIENTS {
        let r = recv(&client);
        assert_eq!(r.opcode(), OpCode::HelloResponse, "{r:?}");
        assert!(channels.remove(&r.header.channel_number));
    }
}

// ----- listener addresses as the original writes them (SPEC §2.3) ----------------

/// Listens on `addr` (as a raw `~listen_on` value); returns the WelcomeResponse's
/// `~listen_on` read back as an address, after checking it round-trips.
#[track_caller]
fn listen_reports(engine: &Engine, group: &tofu::ChannelGroup, listen_on: &str) -> Address {
    let mut m = engine.get(Allocation::Always).unwrap().unwrap();
    m.header.proto.opcode = OpCode::WelcomeRequest;
    m.text_headers.append("~listen_on", listen_on).unwrap();
    let h = group.post(m).expect("post welcome");
    let r = recv(group);
    assert_eq!(r.opcode(), OpCode::WelcomeResponse, "{listen_on}: {r:?}");
    assert_eq!(r.status(), Status::Success, "{listen_on}: {r:?}");
    assert!(r.is_from_application());
    assert_eq!(r.header.channel_number, h.channel_number);
    let value = r.text_headers.get("~listen_on").expect("~listen_on");
    let bound = Address::parse(&r).expect("the bound address parses");
    assert!(bound.is_server());
    assert_eq!(bound.to_string(), value, "Display is what the header says");
    assert_eq!(Address::parse_server(value).as_ref(), Ok(&bound));
    bound
}

/// `tcp||PORT` and `tcp|0.0.0.0|PORT` both listen on all IPv4 interfaces; the
/// WelcomeResponse names `0.0.0.0` and the port the OS picked; clients reach it
/// on loopback.
#[test]
fn listen_on_empty_host_means_all_ipv4_interfaces() {
    let engine = engine();
    for listen_on in ["tcp||0", "tcp|0.0.0.0|0"] {
        let server = engine.create_group().unwrap();
        let bound = listen_reports(&engine, &server, listen_on);
        let Address::TcpServer { host, port } = &bound else {
            panic!("{bound:?}")
        };
        assert_eq!(host, "0.0.0.0", "{listen_on}");
        assert_ne!(*port, 0);
        let client = engine.create_group().unwrap();
        let caddr = Address::tcp_client("127.0.0.1", *port);
        let (cch, sch) = connect_pair(&engine, &client, &server, &caddr);
        round_trip(&engine, &client, &server, cch, sch, listen_on.as_bytes());
    }
    // A fixed port too.
    let port = free_tcp_port().unwrap();
    let server = engine.create_group().unwrap();
    let bound = listen_reports(&engine, &server, &format!("tcp||{port}"));
    assert_eq!(bound, Address::tcp_server("0.0.0.0", port));
}

/// A host name is looked up off the I/O thread and the first address that
/// binds is used; the WelcomeResponse names that IP.
#[test]
fn listen_on_a_host_name() {
    let engine = engine();
    let server = engine.create_group().unwrap();
    let bound = listen_reports(&engine, &server, "tcp|localhost|0");
    let Address::TcpServer { host, port } = &bound else {
        panic!("{bound:?}")
    };
    assert_ne!(*port, 0);
    let ip: std::net::IpAddr = host.parse().expect("an IP, not the name");
    assert!(ip.is_loopback(), "{ip}");
    let client = engine.create_group().unwrap();
    let (cch, sch) = connect_pair(&engine, &client, &server, &bound.to_client());
    round_trip(&engine, &client, &server, cch, sch, b"by name");
}

/// A name that does not resolve fails the listen with `listen_failed` (within
/// the lookup timeout), and the channel is gone.
#[test]
fn listen_on_an_unresolvable_host_name_fails() {
    let engine = Engine::new(tofu::Options {
        lookup_timeout: Some(Duration::from_secs(3)),
        ..tofu::Options::default()
    })
    .unwrap();
    let mut m = engine.get(Allocation::Always).unwrap().unwrap();
    m.header.proto.opcode = OpCode::WelcomeRequest;
    m.text_headers
        .append("~listen_on", "tcp|no-such-host.invalid|0")
        .unwrap();
    failed_listen(&engine, m, Status::ListenFailed);
}

/// `uds|` binds a fresh path in the temp dir; the WelcomeResponse names it,
/// clients connect to it, and the socket file goes when the listener closes.
#[test]
fn listen_on_empty_uds_path_binds_a_fresh_temp_path() {
    if tofu::testing::uds_not_applicable() {
        return;
    }
    let engine = engine();
    let server = engine.create_group().unwrap();
    let a = listen_reports(&engine, &server, "uds|");
    let b = listen_reports(&engine, &server, "uds|");
    let (Address::UdsServer { path: pa }, Address::UdsServer { path: pb }) = (&a, &b) else {
        panic!("{a:?} {b:?}")
    };
    assert_ne!(pa, pb, "each listener gets its own path");
    assert!(pa.starts_with(std::env::temp_dir()), "{}", pa.display());
    assert!(pa.exists());
    let client = engine.create_group().unwrap();
    let (cch, sch) = connect_pair(&engine, &client, &server, &a.to_client());
    round_trip(&engine, &client, &server, cch, sch, b"fresh path");
    server.destroy().unwrap();
    assert!(!pa.exists() && !pb.exists(), "socket files removed");
}

/// A posted port 0 or path is never what the WelcomeResponse says: it names
/// the address bound, also for a UDS path given in full.
#[test]
fn welcome_response_names_the_uds_path_bound() {
    if tofu::testing::uds_not_applicable() {
        return;
    }
    let engine = engine();
    let server = engine.create_group().unwrap();
    let path = temp_uds_path();
    let bound = listen_reports(&engine, &server, &format!("uds|{}", path.display()));
    assert_eq!(bound, Address::uds_server(path));
}

/// A listener on a host name aborted (ByeSignal) before, or just after, its
/// name resolved: every message ends exactly once — the ByeSignal comes back,
/// the WelcomeResponse arrives once (bound, or given back), and a listener the
/// application was told about ends with its `channel_closed` report.
#[test]
fn listener_on_a_host_name_aborted_while_it_looks_the_name_up() {
    let engine = engine();
    for host in ["localhost", "no-such-host.invalid"] {
        let group = engine.create_group().unwrap();
        let mut m = engine.get(Allocation::Always).unwrap().unwrap();
        m.header.proto.opcode = OpCode::WelcomeRequest;
        m.text_headers
            .append("~listen_on", &format!("tcp|{host}|0"))
            .unwrap();
        let h = group.post(m).unwrap();
        let ch = h.channel_number;
        // Posted at once: usually handled while the lookup still runs.
        group
            .post(msg(&engine, ch, OpCode::ByeSignal, b""))
            .unwrap();
        let (mut welcome, mut abort) = (None, None);
        while welcome.is_none() || abort.is_none() {
            let m = recv(&group);
            assert_eq!(m.header.channel_number, ch, "{m:?}");
            match m.opcode() {
                OpCode::WelcomeResponse => assert!(welcome.replace(m).is_none(), "twice"),
                OpCode::ByeSignal => assert!(abort.replace(m).is_none(), "twice"),
                _ => panic!("{host}: unexpected {m:?}"),
            }
        }
        let (welcome, abort) = (welcome.unwrap(), abort.unwrap());
        assert_returned(&abort, OpCode::ByeSignal, ch, Status::ChannelClosed);
        assert_eq!(welcome.header.message_id, h.message_id);
        match (welcome.is_from_engine(), welcome.status()) {
            // The lookup failed first: that is the last word.
            (true, Status::ListenFailed) => {}
            // Aborted before it bound, or bound then aborted: the report.
            (true, Status::ChannelClosed) | (false, Status::Success) => {
                let r = recv(&group);
                assert_report(&r, ch, Status::ChannelClosed);
                assert_eq!(r.close_cause(), None);
            }
            other => panic!("{host}: {other:?} {welcome:?}"),
        }
        recv_nothing(&group, Duration::from_millis(20));
    }
}
