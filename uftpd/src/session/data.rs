//! Passive data connections: listeners (PORT_RANGE aware), accepting with a
//! deadline and only from the control connection's peer, and the set of
//! open connections that make up the data channel.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::PortRange;

/// How long a client has to connect after a PASV/EPSV reply.
pub const ACCEPT_TIMEOUT: Duration = Duration::from_secs(30);

/// Send/receive timeout on data sockets: a peer that neither reads nor
/// writes for this long loses its transfer (its session stays).
pub const DATA_IO_TIMEOUT: Duration = Duration::from_secs(600);

/// Errors of the data channel; the text goes into the FTP reply.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Every port of PORT_RANGE is busy.
    #[error("Cannot set up data connection - no free ports in range {0}:{1}")]
    RangeExhausted(u16, u16),
    /// bind/listen failed.
    #[error("Cannot set up data connection: {0}")]
    Listen(io::Error),
    /// No PASV/EPSV before a transfer.
    #[error("No data connection: send PASV or EPSV first")]
    NotOpen,
    /// Fewer connections than negotiated streams.
    #[error(
        "Data channel incomplete: {have} of {want} connections opened (send one PASV/EPSV per stream)"
    )]
    Incomplete {
        /// Opened.
        have: usize,
        /// Negotiated.
        want: usize,
    },
    /// The client did not connect in time.
    #[error("Client did not open the data connection within {0} seconds")]
    Timeout(u64),
    /// accept failed.
    #[error("Accepting the data connection failed: {0}")]
    Accept(io::Error),
}

#[derive(Debug)]
struct Pending {
    listener: TcpListener,
    deadline: Instant,
}

/// The data channel of a session.
#[derive(Debug)]
pub struct DataChannel {
    pending: Vec<Pending>,
    conns: Vec<TcpStream>,
    /// Number of streams negotiated with `NOOP n` (1 by default).
    pub streams: usize,
    /// `NOOP n` was just sent: the next PASV/EPSV starts a new channel,
    /// whatever a KEEP-ALIVE channel left open.
    fresh: bool,
    /// A listener's 30 s passed without a connection.
    expired: bool,
    peer_ip: IpAddr,
    local_ip: IpAddr,
    port_range: Option<PortRange>,
}

impl DataChannel {
    /// A closed data channel for a control connection between `local` and
    /// `peer`.
    pub fn new(local: SocketAddr, peer: SocketAddr, port_range: Option<PortRange>) -> Self {
        DataChannel {
            pending: Vec::new(),
            conns: Vec::new(),
            streams: 1,
            fresh: false,
            expired: false,
            peer_ip: peer.ip().to_canonical(),
            local_ip: local.ip().to_canonical(),
            port_range,
        }
    }

    /// The local address data listeners bind to.
    pub fn local_ip(&self) -> IpAddr {
        self.local_ip
    }

    /// Number of connections opened or announced.
    pub fn announced(&self) -> usize {
        self.pending.len() + self.conns.len()
    }

    /// The single open connection of a one-stream channel (after
    /// [`DataChannel::connections`] succeeded).
    pub fn first(&mut self) -> io::Result<&mut TcpStream> {
        self.conns
            .first_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no data connection"))
    }

    /// Hands the open connections over (to a codec or multi-stream channel,
    /// which ends by closing them) and falls back to one stream.
    pub fn take(&mut self) -> Vec<TcpStream> {
        self.pending.clear();
        self.streams = 1;
        std::mem::take(&mut self.conns)
    }

    /// `NOOP n`: the next data channel has `n` streams and is set up anew.
    pub fn negotiate(&mut self, n: usize) {
        self.streams = n.max(1);
        self.fresh = true;
    }

    /// Closes every listener and connection and falls back to one stream.
    pub fn close(&mut self) {
        self.pending.clear();
        self.expired = false;
        for c in self.conns.drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        self.streams = 1;
    }

    /// Opens a listener for one more connection and returns its port. A
    /// PASV while the channel is complete starts a new channel.
    pub fn listen(&mut self) -> Result<u16, DataError> {
        if self.fresh || self.announced() >= self.streams {
            let streams = self.streams;
            self.close();
            self.streams = streams;
            self.fresh = false;
        }
        self.expired = false;
        let listener = match self.port_range {
            None => bind(SocketAddr::new(self.local_ip, 0)).map_err(DataError::Listen)?,
            Some(r) => bind_in_range(self.local_ip, r)?,
        };
        let port = listener.local_addr().map_err(DataError::Listen)?.port();
        self.pending.push(Pending {
            listener,
            deadline: Instant::now() + ACCEPT_TIMEOUT,
        });
        Ok(port)
    }

    /// Accepts what is pending and returns the open connections, which must
    /// be as many as negotiated streams.
    pub fn connections(&mut self) -> Result<&mut Vec<TcpStream>, DataError> {
        if self.expired {
            self.close();
            return Err(DataError::Timeout(ACCEPT_TIMEOUT.as_secs()));
        }
        if self.announced() == 0 {
            return Err(DataError::NotOpen);
        }
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            match accept_from(&p.listener, p.deadline, self.peer_ip) {
                Ok(s) => self.conns.push(s),
                Err(e) => {
                    self.close();
                    return Err(e);
                }
            }
        }
        if self.conns.len() < self.streams {
            let have = self.conns.len();
            let want = self.streams;
            self.close();
            return Err(DataError::Incomplete { have, want });
        }
        Ok(&mut self.conns)
    }
}

impl DataChannel {
    /// Whether listeners wait for their connection.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The listeners still waiting, to poll them with the control
    /// connection, and the earliest deadline among them.
    pub fn pending_listeners(&self) -> (Vec<BorrowedFd<'_>>, Option<Instant>) {
        let fds = self.pending.iter().map(|p| p.listener.as_fd()).collect();
        let first = self.pending.iter().map(|p| p.deadline).min();
        (fds, first)
    }

    /// Accepts the connections that have arrived (from the control peer
    /// only) and closes the listeners whose 30 s have passed, so that a
    /// late connection is refused by the kernel instead of waiting in the
    /// backlog for the next transfer command. Never blocks.
    pub fn accept_ready(&mut self) {
        let now = Instant::now();
        let mut still = Vec::with_capacity(self.pending.len());
        for p in std::mem::take(&mut self.pending) {
            match try_accept(&p.listener, self.peer_ip) {
                Ok(Some(s)) => self.conns.push(s),
                Ok(None) if now < p.deadline => still.push(p),
                Ok(None) => {
                    tracing::info!(
                        "No data connection within {} seconds; the listener is closed",
                        ACCEPT_TIMEOUT.as_secs()
                    );
                    self.expired = true;
                }
                Err(e) => {
                    tracing::info!("Accepting a data connection failed: {e}");
                    self.expired = true;
                }
            }
        }
        self.pending = still;
    }
}

/// One non-blocking accept from `peer_ip`: `None` when nothing (from that
/// address) is waiting. Others are closed and logged.
fn try_accept(listener: &TcpListener, peer_ip: IpAddr) -> io::Result<Option<TcpStream>> {
    listener.set_nonblocking(true)?;
    loop {
        match listener.accept() {
            Ok((s, addr)) => {
                if addr.ip().to_canonical() != peer_ip {
                    tracing::warn!(
                        "Rejecting data connection from {} (expected {peer_ip})",
                        addr.ip()
                    );
                    drop(s);
                    continue;
                }
                return data_socket(s).map(Some);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Settings of an accepted data connection.
fn data_socket(s: TcpStream) -> io::Result<TcpStream> {
    s.set_nonblocking(false)?;
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(DATA_IO_TIMEOUT));
    let _ = s.set_write_timeout(Some(DATA_IO_TIMEOUT));
    Ok(s)
}

fn listener_socket(addr: SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Lets a port whose previous connection is in TIME_WAIT be reused; on
    // Linux it never allows two listeners on one port.
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    Ok(s)
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = listener_socket(addr)?;
    s.bind(&addr.into())?;
    s.listen(8)?;
    Ok(s.into())
}

fn bind_in_range(ip: IpAddr, r: PortRange) -> Result<TcpListener, DataError> {
    let span = u32::from(r.upper - r.lower) + 1;
    let start = rand::random_range(0..span);
    for i in 0..span {
        let port = r.lower as u32 + (start + i) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        match bind(SocketAddr::new(ip, port)) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => continue,
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => continue,
            Err(e) => return Err(DataError::Listen(e)),
        }
    }
    Err(DataError::RangeExhausted(r.lower, r.upper))
}

/// Accepts one connection from `peer_ip` before `deadline`; connections
/// from other addresses are closed and logged.
fn accept_from(
    listener: &TcpListener,
    deadline: Instant,
    peer_ip: IpAddr,
) -> Result<TcpStream, DataError> {
    loop {
        match try_accept(listener, peer_ip) {
            Ok(Some(s)) => return Ok(s),
            Ok(None) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(DataError::Timeout(ACCEPT_TIMEOUT.as_secs()));
                }
                let left = deadline - now;
                let ms = u16::try_from(left.as_millis().min(10_000)).unwrap_or(10_000);
                let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(DataError::Accept(e.into())),
                }
            }
            Err(e) => return Err(DataError::Accept(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lo(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn accepts_from_peer_only_and_counts_streams() {
        let mut d = DataChannel::new(lo(21), lo(5555), None);
        assert!(matches!(d.connections(), Err(DataError::NotOpen)));
        let port = d.listen().expect("listen");
        let _c = TcpStream::connect(lo(port)).expect("connect");
        assert_eq!(d.connections().expect("conns").len(), 1);
        d.streams = 2;
        let port = d.listen().expect("listen second");
        let _c2 = TcpStream::connect(lo(port)).expect("connect");
        assert_eq!(d.connections().expect("conns").len(), 2);
        // A third PASV starts over.
        let _ = d.listen().expect("listen");
        assert_eq!(d.announced(), 1);
        d.close();
        assert_eq!(d.streams, 1);
    }

    #[test]
    fn range_exhaustion() {
        // Find two free adjacent ports by binding them ourselves.
        let a = TcpListener::bind(lo(0)).expect("bind");
        let p = a.local_addr().expect("addr").port();
        let r = PortRange { lower: p, upper: p };
        let mut d = DataChannel::new(lo(21), lo(5555), Some(r));
        match d.listen() {
            Err(DataError::RangeExhausted(l, u)) => assert_eq!((l, u), (p, p)),
            other => panic!("expected exhaustion, got {other:?}"),
        }
        drop(a);
        assert_eq!(d.listen().expect("free now"), p);
    }
}
