//! Routing: the subscription tree, retained messages, and fan-out to sessions.

pub mod retained;
pub mod tree;
