//! Transports: where client byte streams come from. Each listener turns accepted connections
//! into a [`Transport`] for the `connection` module, which never knows whether it reads TCP, TLS
//! or WebSocket frames.

pub(crate) mod tcp;
pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A client byte stream. Besides `AsyncRead`/`AsyncWrite` (used during the handshake), an
/// established connection drives it by readiness: it waits for readability without holding a
/// buffer (an idle connection holds none), and for readability and writability at once from
/// one task, through `&self`, with poll functions that need no future state of their own.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Ready when a read would make progress (data, end of stream or an error).
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Reads what is available without waiting; `WouldBlock` if nothing is.
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize>;
    /// Ready when a write would make progress.
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Writes what the socket accepts without waiting; `WouldBlock` if it accepts nothing.
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
}

impl Transport for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
        TcpStream::try_read_buf(self, buf)
    }
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_write_ready(self, cx)
    }
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }
}

/// What a connection needs to know about the listener that accepted it.
#[derive(Debug, Clone)]
pub struct ListenerContext {
    /// Address the listener is bound to.
    pub local_addr: SocketAddr,
    /// The users and the ACL this listener checks.
    pub(crate) auth: crate::broker::ListenerAuth,
    /// Whether clients without a user name are admitted.
    pub allow_anonymous: bool,
    /// TLS with `use_identity_as_username`: the client certificate's subject CN (or first
    /// subject alternative name) is the user name, and the certificate is the authentication.
    pub use_identity_as_username: bool,
}
