//! [`TlsTransport`]: a TCP socket and a rustls server connection, driven by socket readiness so
//! that an established TLS connection is served by the same single-task loop as plain TCP.
//!
//! rustls is sans-IO: it is handed TLS bytes read from the socket (`read_tls`), decrypts them
//! (`process_new_packets`) into plaintext the caller takes (`reader`), and encrypts plaintext
//! (`writer`) into TLS bytes waiting to be written to the socket (`write_tls`). Here every socket
//! access is a non-blocking `try_read`/`try_write`, so a `WouldBlock` from the socket clears
//! tokio's readiness and the next `poll_*_ready` waits for the socket again.
//!
//! Two consequences of the TLS layer the readiness methods must account for:
//! - plaintext can wait inside rustls while the socket has nothing more (a read that took part of
//!   a record's plaintext, or the client's first packet decrypted along with its handshake
//!   `Finished`): [`Transport::poll_read_ready`] is then ready without the socket;
//! - accepted plaintext becomes TLS bytes the socket may not take at once: they are written out
//!   before more plaintext is accepted, so at most one chunk ([`MAX_PLAINTEXT_PER_WRITE`] plus
//!   record overhead) waits per connection, and [`Transport::poll_write_ready`] is the socket's.
//!   A caller that has nothing more to write stops polling write readiness although some of
//!   those bytes may still wait: [`Transport::poll_read_ready`], which an idle connection keeps
//!   polling, writes them out and wakes the task when the socket has room for the rest.

use std::future::poll_fn;
use std::io::{self, BufRead, Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use rustls::{ServerConfig, ServerConnection};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::PeerIdentity;
use crate::transport::Transport;

/// Most plaintext one [`Transport::try_write`] accepts: one TLS record's worth (RFC 8446 §5.1:
/// 2^14 bytes), which bounds what waits encrypted for a slow client.
const MAX_PLAINTEXT_PER_WRITE: usize = 16 * 1024;
/// Room made in a full read buffer before copying plaintext into it.
const READ_RESERVE: usize = 4096;

/// An accepted TLS connection (after its handshake), as a [`Transport`].
///
/// The rustls state is behind a mutex only because [`Transport`] methods take `&self` (so that
/// read and write readiness can be polled together from one `select!`) and the connection's
/// future must be `Send`, which needs the transport to be `Sync`. One task owns the transport and
/// calls its methods one at a time, never holding the lock across an await, so the lock is never
/// contended: each call costs one uncontended atomic acquire and release.
///
/// The rustls state (about 1.2 kB, plus its buffers on the heap) is boxed so that the transport
/// adds only a pointer to the connection's future, which is moved from the handshake into the
/// established loop.
#[derive(Debug)]
pub struct TlsTransport {
    tcp: TcpStream,
    state: Box<Mutex<TlsState>>,
}

/// What the lock guards.
#[derive(Debug)]
struct TlsState {
    conn: ServerConnection,
    /// rustls reported a protocol error (and has sent its alert): the connection is unusable.
    failed: bool,
}

/// Performs the TLS handshake of an accepted TCP connection with `config`, within `timeout` (a
/// client that opens a socket and stalls must not hold it: slowloris).
///
/// Returns the established transport and, if the client presented a certificate (which rustls
/// has verified against the listener's CA), the identity it names. An identity whose
/// certificate cannot be parsed further is returned empty.
pub async fn accept(
    tcp: TcpStream,
    config: Arc<ServerConfig>,
    timeout: Duration,
) -> io::Result<(TlsTransport, Option<PeerIdentity>)> {
    let conn = ServerConnection::new(config).map_err(io::Error::other)?;
    let transport = TlsTransport {
        tcp,
        state: Box::new(Mutex::new(TlsState {
            conn,
            failed: false,
        })),
    };
    match tokio::time::timeout(timeout, poll_fn(|cx| transport.poll_handshake(cx))).await {
        Ok(result) => result?,
        Err(_elapsed) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "TLS handshake timed out",
            ));
        }
    }
    let identity = transport.peer_identity();
    Ok((transport, identity))
}

impl TlsTransport {
    /// The underlying TCP socket (for its addresses and options).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// The identity in the client's certificate, if it presented one.
    fn peer_identity(&self) -> Option<PeerIdentity> {
        let state = self.state.lock();
        let der = state.conn.peer_certificates()?.first()?;
        Some(PeerIdentity::from_der(der.as_ref()).unwrap_or_default())
    }

    /// Drives the handshake: writes what rustls has to send, reads what it waits for, until the
    /// handshake is complete and its last flight (TLS 1.3 session tickets) is written.
    fn poll_handshake(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.state.lock();
        loop {
            match state.flush(&self.tcp) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // The would-block cleared the socket's write readiness: this waits for it.
                    ready!(self.tcp.poll_write_ready(cx))?;
                    continue;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
            if !state.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            match state.read_tls(&self.tcp) {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed during the TLS handshake",
                    )));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(self.tcp.poll_read_ready(cx))?;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Takes plaintext: `take` is given what rustls holds (never empty) and returns how much of
    /// it it used. Reads TLS bytes from the socket while rustls holds no plaintext.
    ///
    /// `Ok(0)`: the client closed the TLS session (close_notify). `WouldBlock`: the socket has
    /// no more bytes (its read readiness is cleared). `UnexpectedEof`: the TCP connection ended
    /// without close_notify.
    fn read_with(&self, take: impl FnOnce(&[u8]) -> usize) -> io::Result<usize> {
        let mut state = self.state.lock();
        state.check_failed()?;
        loop {
            match state.conn.reader().into_first_chunk() {
                Ok([]) => return Ok(0),
                Ok(chunk) => {
                    let n = take(chunk);
                    state.conn.reader().consume(n);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // A return of 0 (end of stream) is recorded by rustls: the reader reports it above.
            state.read_tls(&self.tcp)?;
        }
    }
}

impl TlsState {
    /// An error if the connection has failed.
    fn check_failed(&self) -> io::Result<()> {
        if self.failed {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS connection failed",
            ))
        } else {
            Ok(())
        }
    }

    /// Reads TLS bytes from the socket into rustls and processes them (an error sends rustls'
    /// alert and fails the connection). `Ok(0)` at end of stream; `WouldBlock` from the socket.
    fn read_tls(&mut self, tcp: &TcpStream) -> io::Result<usize> {
        let n = self.conn.read_tls(&mut SocketIo(tcp))?;
        if let Err(e) = self.conn.process_new_packets() {
            self.failed = true;
            // Best effort: the alert tells the client why.
            let _ = self.flush(tcp);
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        if self.conn.wants_write() && !self.conn.is_handshaking() {
            // Answers to the client's post-handshake messages (a TLS 1.3 KeyUpdate): written now
            // if the socket takes them, otherwise before the next plaintext.
            let _ = self.flush(tcp);
        }
        Ok(n)
    }

    /// Writes what is waiting without being asked to, and registers `cx` for the socket's
    /// writability while some remains.
    ///
    /// `try_write` reports plaintext as written once rustls has it, though the socket may not
    /// have taken all of its TLS bytes yet. The caller then stops polling write readiness when
    /// it has nothing more to write (an idle connection only waits to read), so those bytes are
    /// pushed from the read-readiness poll, and the task is woken when the socket can take
    /// them. Errors are left for the next read or write to report.
    fn flush_unprompted(&mut self, tcp: &TcpStream, cx: &mut Context<'_>) {
        loop {
            match self.flush(tcp) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => match tcp.poll_write_ready(cx) {
                    // Writable again already: try again.
                    Poll::Ready(Ok(())) => {}
                    Poll::Pending | Poll::Ready(Err(_)) => return,
                },
                Ok(()) | Err(_) => return,
            }
        }
    }

    /// Writes the TLS bytes rustls has waiting. `Ok` once none are left; `WouldBlock` when the
    /// socket takes no more (its write readiness is cleared).
    fn flush(&mut self, tcp: &TcpStream) -> io::Result<()> {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut SocketIo(tcp))? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }
}

/// The socket as `std::io` for rustls: non-blocking reads and writes through tokio's readiness.
struct SocketIo<'a>(&'a TcpStream);

impl Read for SocketIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for SocketIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for TlsTransport {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        {
            let mut state = self.state.lock();
            if state.failed {
                // Let the read report the failure.
                return Poll::Ready(Ok(()));
            }
            state.flush_unprompted(&self.tcp, cx);
            // Plaintext already decrypted, or the end of the stream: a read makes progress
            // without the socket. Every record read is processed at once (`read_tls`), so
            // rustls holds no undecrypted complete record here.
            let readable = !matches!(
                state.conn.reader().into_first_chunk(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock
            );
            if readable {
                return Poll::Ready(Ok(()));
            }
        }
        self.tcp.poll_read_ready(cx)
    }

    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        if buf.capacity() == buf.len() {
            buf.reserve(READ_RESERVE);
        }
        let room = buf.capacity() - buf.len();
        self.read_with(|chunk| {
            let n = chunk.len().min(room);
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
            n
        })
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.state.lock().failed {
            // Let the write report the failure.
            return Poll::Ready(Ok(()));
        }
        self.tcp.poll_write_ready(cx)
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut state = self.state.lock();
        state.check_failed()?;
        // TLS bytes of earlier plaintext go first: until they are out, accept nothing more.
        state.flush(&self.tcp)?;
        let chunk = buf.get(..MAX_PLAINTEXT_PER_WRITE).unwrap_or(buf);
        let n = state.conn.writer().write(chunk)?;
        if n == 0 {
            // rustls takes nothing only when its buffer of TLS bytes is full, which the flush
            // above has just emptied. Never `Ok(0)` for a non-empty write: callers take it for a
            // closed connection.
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "TLS layer accepted no data",
            ));
        }
        match state.flush(&self.tcp) {
            // What the socket did not take is written before the next plaintext is accepted.
            Ok(()) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(n),
            Err(e) => Err(e),
        }
    }
}

impl AsyncRead for TlsTransport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(Transport::poll_read_ready(this, cx))?;
            let taken = this.read_with(|chunk| {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(chunk.get(..n).unwrap_or_default());
                n
            });
            match taken {
                // Data, or (0) the end of the stream.
                Ok(_) => return Poll::Ready(Ok(())),
                // The socket's readiness is cleared: the next poll waits for it.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for TlsTransport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            ready!(Transport::poll_write_ready(this, cx))?;
            match Transport::try_write(this, buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let flushed = {
                let mut state = this.state.lock();
                state.check_failed()?;
                state.flush(&this.tcp)
            };
            match flushed {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(this.tcp.poll_write_ready(cx))?;
                }
                other => return Poll::Ready(other),
            }
        }
    }

    /// Sends close_notify (once), writes what is waiting, then shuts the socket's write half.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let failed = {
            let mut state = this.state.lock();
            // rustls queues it only the first time.
            state.conn.send_close_notify();
            state.failed
        };
        if !failed {
            ready!(Pin::new(&mut *this).poll_flush(cx))?;
        }
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
