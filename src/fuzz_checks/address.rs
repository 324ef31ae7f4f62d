//! Address parsing and formatting on arbitrary text: nothing panics, and
//! whatever is accepted survives every round trip unchanged:
//!
//! * `parse` (client or server) → `Display` → `parse` gives the same address,
//!   and `Display` is stable from then on;
//! * an accepted address formats into a message and `Address::parse` reads the
//!   same address back, whatever text headers the message already had;
//! * an address built with the constructors from arbitrary parts either fails
//!   `format` or reads back equal.
//!
//! Shared by the fuzz target `address` and by `src/fuzz_replay.rs`,
//! which replays the saved inputs on stable.

use tofu::{Address, Message};

/// Checks one input; panics on a violation.
///
/// Input layout: `selector port_hi port_lo` then UTF-8 text split on the first
/// `\0` into the address text (or host/path) and raw text headers to start from.
pub(crate) fn run(data: &[u8]) {
    let [selector, port_hi, port_lo, rest @ ..] = data else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (addr_text, prior_headers) = text.split_once('\0').unwrap_or((text, ""));
    let port = u16::from_be_bytes([*port_hi, *port_lo]);

    for server in [false, true] {
        let parsed = parse(addr_text, server);
        if let Ok(addr) = parsed {
            assert_eq!(addr.is_server(), server);
            let shown = addr.to_string();
            assert_eq!(parse(&shown, server).as_ref(), Ok(&addr), "{shown:?}");
            assert_eq!(parse(&shown, server).unwrap().to_string(), shown);
            check_format(&addr, prior_headers, true);
            // Switching variant keeps host/port/path; a client's host name is
            // not a valid server host, so only check the way back.
            assert_eq!(addr.to_client().to_server().to_client(), addr.to_client());
        }
    }

    let built = match selector % 4 {
        0 => Address::tcp_client(addr_text, port),
        1 => Address::tcp_server(addr_text, port),
        2 => Address::uds_client(addr_text),
        _ => Address::uds_server(addr_text),
    };
    let _ = built.to_string();
    check_format(&built, prior_headers, false);
}

fn parse(s: &str, server: bool) -> Result<Address, tofu::Error> {
    if server {
        Address::parse_server(s)
    } else {
        s.parse()
    }
}

/// Formats `addr` into a message that starts with `prior` as its raw text
/// headers; a success must read back as `addr`, a failure must leave the
/// message untouched. `must_format`: `addr` came from a successful parse.
fn check_format(addr: &Address, prior: &str, must_format: bool) {
    let mut msg = Message::new();
    if msg.text_headers.set_raw(prior).is_err() {
        return;
    }
    msg.body.extend_from_slice(b"body");
    let before = msg.clone();
    match addr.format(&mut msg) {
        Ok(()) => {
            assert_eq!(Address::parse(&msg).as_ref(), Ok(addr), "{msg:?}");
            assert_eq!(msg.body, b"body");
        }
        Err(e) => {
            assert_eq!(msg, before, "a failed format leaves the message alone");
            assert!(
                !must_format || e == tofu::Error::InvalidHeadersLen,
                "a parsed address formats: {addr:?}: {e:?}"
            );
        }
    }
}
