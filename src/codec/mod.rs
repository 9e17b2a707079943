//! The MQTT wire format: decoding bytes into [`Packet`]s and encoding them back, for protocol
//! levels 3 (3.1), 4 (3.1.1) and 5 (5.0). No I/O and no broker state live here.
//!
//! The decoder works on a `BytesMut` that holds whatever has arrived so far: it returns
//! `Ok(None)` until a whole packet is buffered, checks the announced length against the maximum
//! packet size *before* waiting for (or allocating) the body, and never panics on any input.

mod ack;
mod connect;
mod decode;
mod encode;
mod error;
mod packet;
mod primitives;
mod properties;
mod props;
mod props_write;
mod publish;
mod reason;
mod subscribe;
mod topic_rules;

#[cfg(test)]
mod tests;

pub use decode::{decode, frame_len};
pub use encode::{encode, encoded_len};
pub use error::{DecodeError, EncodeError};
pub use packet::*;
pub use properties::Properties;
