//! Opening channels without writing the Welcome/Hello message by hand:
//! [`listen`](ChannelGroup::listen), [`connect`](ChannelGroup::connect) and
//! [`connect_with`](ChannelGroup::connect_with) (the message remains the API
//! underneath).

use super::ChannelGroup;
use crate::address::Address;
use crate::error::{Error, PostError};
use crate::message::Message;

impl ChannelGroup {
    /// Opens a listener on `addr`: takes a message from the engine's pool
    /// ([`Allocation::Always`](crate::Allocation)), formats it as a
    /// WelcomeRequest ([`Address::format`]) and [`post`](Self::post)s it.
    /// Returns the new channel's number at once. A client address is
    /// listened on as its server variant ([`Address::to_server`]).
    ///
    /// The message remains the API underneath: whether the listener is up
    /// arrives later on this group, as after a plain `post` — a
    /// WelcomeResponse with `~listen_on` naming the address bound (the port
    /// chosen for `tcp|host|0`, the path for `uds|`), or the request back
    /// with `origin = Engine` and a status such as `listen_failed`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAddress`] for an address [`Address::format`] rejects;
    /// any error [`post`](Self::post) gives (the message goes back to the
    /// pool); [`Error::ShutdownStarted`] after shutdown.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tofu::{Address, Engine, OpCode, Options};
    ///
    /// let engine = Engine::new(Options::default())?;
    /// let server = engine.create_group()?;
    /// let listener = server.listen(&Address::tcp_server("127.0.0.1", 0))?;
    /// let welcome = server.wait_receive(Some(Duration::from_secs(5)))?.expect("welcome");
    /// assert_eq!(welcome.opcode(), OpCode::WelcomeResponse);
    /// assert_eq!(welcome.header.channel_number, listener);
    /// let bound = Address::parse_server(welcome.text_headers.get("~listen_on").unwrap())?;
    ///
    /// let client = engine.create_group()?;
    /// let ch = client.connect(&bound.to_client())?;
    /// // The server answers the HelloRequest with a HelloResponse.
    /// let mut answer = server.wait_receive(Some(Duration::from_secs(5)))?.expect("hello");
    /// assert_eq!(answer.opcode(), OpCode::HelloRequest);
    /// answer.header.proto.opcode = OpCode::HelloResponse;
    /// server.post(answer)?;
    /// let hello = client.wait_receive(Some(Duration::from_secs(5)))?.expect("hello");
    /// assert_eq!(hello.opcode(), OpCode::HelloResponse);
    /// assert_eq!(hello.header.channel_number, ch);
    /// # Ok::<(), tofu::Error>(())
    /// ```
    pub fn listen(&self, addr: &Address) -> Result<u16, Error> {
        self.open(&addr.to_server(), &[])
    }

    /// Connects to `addr`: takes a message from the engine's pool
    /// ([`Allocation::Always`](crate::Allocation)), formats it as a
    /// HelloRequest ([`Address::format`]) and [`post`](Self::post)s it.
    /// Returns the new channel's number at once. A server address is
    /// connected to as its client variant ([`Address::to_client`]).
    ///
    /// The message remains the API underneath: whether the peer accepted
    /// arrives later on this group, as after a plain `post` — the peer's
    /// HelloResponse (`origin = Application`, on the returned channel), or
    /// the request back with `origin = Engine` and a status such as
    /// `connect_failed`. To send text headers with the HelloRequest, use
    /// [`connect_with`](Self::connect_with).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidAddress`] for an address [`Address::format`] rejects
    /// (a client port 0, an empty host); any error [`post`](Self::post)
    /// gives (the message goes back to the pool); [`Error::ShutdownStarted`]
    /// after shutdown.
    ///
    /// # Examples
    ///
    /// See [`listen`](Self::listen) for both halves;
    /// nothing listens here, so the engine gives the request back:
    ///
    /// ```
    /// use std::time::Duration;
    /// use tofu::{Address, Engine, Error, Options, Status};
    ///
    /// let engine = Engine::new(Options::default())?;
    /// let group = engine.create_group()?;
    /// let port = tofu::testing::free_tcp_port().expect("a free port");
    /// let ch = group.connect(&Address::tcp_client("127.0.0.1", port))?;
    /// let back = group.wait_receive(Some(Duration::from_secs(5)))?.expect("report");
    /// assert!(back.is_from_engine());
    /// assert_eq!(back.header.channel_number, ch);
    /// assert_eq!(back.status(), Status::ConnectFailed);
    ///
    /// let bad = group.connect(&Address::tcp_client("127.0.0.1", 0));
    /// assert_eq!(bad, Err(Error::InvalidAddress));
    /// # Ok::<(), tofu::Error>(())
    /// ```
    pub fn connect(&self, addr: &Address) -> Result<u16, Error> {
        self.open(&addr.to_client(), &[])
    }

    /// Like [`connect`](Self::connect), with `headers` appended to the
    /// HelloRequest's text headers (the peer reads them from the request it
    /// receives, e.g. credentials or a protocol version).
    ///
    /// # Errors
    ///
    /// As [`connect`](Self::connect); [`Error::InvalidMessage`] for a header
    /// [`TextHeaders::append`](crate::TextHeaders::append) refuses (an empty
    /// name or value, a `:` in the name, CR or LF), [`Error::InvalidHeadersLen`]
    /// when the headers do not fit in 65,535 bytes. Nothing is posted then.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tofu::{Address, Engine, OpCode, Options};
    ///
    /// let engine = Engine::new(Options::default())?;
    /// let server = engine.create_group()?;
    /// server.listen(&Address::tcp_server("127.0.0.1", 0))?;
    /// let welcome = server.wait_receive(Some(Duration::from_secs(5)))?.expect("welcome");
    /// let bound = Address::parse_server(welcome.text_headers.get("~listen_on").unwrap())?;
    ///
    /// let client = engine.create_group()?;
    /// client.connect_with(&bound.to_client(), &[("user", "ann")])?;
    /// let hello = server.wait_receive(Some(Duration::from_secs(5)))?.expect("hello");
    /// assert_eq!(hello.opcode(), OpCode::HelloRequest);
    /// assert_eq!(hello.text_headers.get("user"), Some("ann"));
    /// # Ok::<(), tofu::Error>(())
    /// ```
    pub fn connect_with(&self, addr: &Address, headers: &[(&str, &str)]) -> Result<u16, Error> {
        self.open(&addr.to_client(), headers)
    }

    /// `listen` and `connect`: a pool message formatted for `addr`, posted.
    fn open(&self, addr: &Address, headers: &[(&str, &str)]) -> Result<u16, Error> {
        let engine = &self.engine;
        let mut msg = engine
            .get(crate::Allocation::Always)?
            .unwrap_or_else(Message::new);
        let formatted = headers
            .iter()
            .try_for_each(|(name, value)| msg.text_headers.append(name, value))
            .and_then(|()| addr.format(&mut msg));
        if let Err(e) = formatted {
            engine.put(msg);
            return Err(e);
        }
        match self.post(msg) {
            Ok(header) => Ok(header.channel_number),
            Err(PostError { error, message }) => {
                engine.put(message);
                Err(error)
            }
        }
    }
}
