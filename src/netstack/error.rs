//! What can go wrong in the netstack: [`NetstackError`] and the inbound queue's [`Full`].

use std::io;
use std::net::{IpAddr, SocketAddr};

use super::config::{MTU_RANGE, TCP_BUFFER_RANGE};

/// Errors of the netstack. None is worth retrying unchanged except `TooManySockets`.
#[derive(Debug, thiserror::Error)]
pub enum NetstackError {
    /// `addresses` is empty.
    #[error("no tunnel address configured")]
    NoAddresses,
    /// More addresses than smoltcp's interface holds.
    #[error("too many addresses (at most {max})")]
    TooManyAddresses {
        /// How many it holds.
        max: usize,
    },
    /// The MTU is outside [`MTU_RANGE`].
    #[error("MTU {0} out of range ({min}..={max})", min = MTU_RANGE.start(), max = MTU_RANGE.end())]
    InvalidMtu(usize),
    /// The TCP buffer size is outside [`TCP_BUFFER_RANGE`].
    #[error(
        "TCP buffer size {0} out of range ({min}..={max})",
        min = TCP_BUFFER_RANGE.start(),
        max = TCP_BUFFER_RANGE.end()
    )]
    InvalidBuffer(usize),
    /// A limit (socket count, backlog, queue...) set to 0.
    #[error("{name} must be at least 1")]
    ZeroLimit {
        /// The field of [`NetstackConfig`](super::NetstackConfig).
        name: &'static str,
    },
    /// A listen or connect address that is not one of ours.
    #[error("{0} is not one of our addresses")]
    AddressNotLocal(IpAddr),
    /// Listening on port 0 (there is no ephemeral listen port).
    #[error("port 0 is not allowed")]
    PortZero,
    /// Something already listens on that address.
    #[error("{0} is already being listened on")]
    AddrInUse(SocketAddr),
    /// Retry after connections close.
    #[error("socket limit reached")]
    TooManySockets,
    /// Retry after connections close.
    #[error("socket memory budget spent")]
    MemoryBudget,
    /// No tunnel address of the remote's family.
    #[error("no local address can reach {0}")]
    Unaddressable(SocketAddr),
}

impl From<NetstackError> for io::Error {
    fn from(e: NetstackError) -> Self {
        let kind = match e {
            NetstackError::AddressNotLocal(_) => io::ErrorKind::AddrNotAvailable,
            NetstackError::AddrInUse(_) => io::ErrorKind::AddrInUse,
            NetstackError::TooManySockets | NetstackError::MemoryBudget => {
                io::ErrorKind::QuotaExceeded
            }
            NetstackError::Unaddressable(_) => io::ErrorKind::NetworkUnreachable,
            _ => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e)
    }
}

/// `push_inbound` could not queue the packet: poll, then offer it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("netstack inbound queue is full")]
pub struct Full;
