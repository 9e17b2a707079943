//! Transports: where client byte streams come from. Each listener turns accepted connections
//! into a pair of async byte-stream halves for [`crate::connection`], which never knows
//! whether it reads TCP, TLS or WebSocket frames.

pub(crate) mod tcp;

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::AsyncRead;
use tokio::net::tcp::OwnedReadHalf;

/// The read half of a client byte stream.
pub trait ReadHalf: AsyncRead + Unpin + Send + 'static {
    /// Completes when a read would make progress (data, end of stream or an error), without
    /// needing a buffer, so that an idle connection holds no read buffer. A transport that
    /// cannot tell may complete at once; the connection then simply reads.
    fn ready(&self) -> impl Future<Output = io::Result<()>> + Send + '_;
}

impl ReadHalf for OwnedReadHalf {
    fn ready(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        self.readable()
    }
}

/// What a connection needs to know about the listener that accepted it.
#[derive(Debug, Clone)]
pub struct ListenerContext {
    /// Address the listener is bound to.
    pub local_addr: SocketAddr,
    /// Whether clients without a user name are admitted.
    pub allow_anonymous: bool,
}
