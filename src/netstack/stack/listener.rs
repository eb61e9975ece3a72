//! Listeners of the stack: a half-open set and a bounded accept queue per endpoint, and
//! admission of connection requests.
//!
//! No LISTEN socket waits between polls. smoltcp hands a segment to the *first* socket in its
//! set that accepts it, and a LISTEN socket accepts any SYN for its endpoint; a LISTEN socket
//! kept ready (the usual pattern) therefore steals a retransmitted SYN from the half-open
//! connection it belongs to whenever it sits in an earlier slot, and answers with a second
//! SYN-ACK of another sequence number (then RSTs): exactly the resets seen on lossy links.
//! Instead, right before smoltcp sees a connection request ([`Stack::prepare_accept`]):
//! - if a socket with the same 4-tuple exists, nothing is created and smoltcp delivers the SYN
//!   to it (a duplicate in SYN-RECEIVED is ignored there; its own timer resends the SYN-ACK,
//!   after 1, 3, 7, 15 and 31 s, within `HALF_OPEN_TIMEOUT`). Linux answers such a SYN with
//!   the SYN-ACK at once (`tcp_check_req`); smoltcp 0.14 drops it in `Socket::process` ("expecting
//!   an ACK") and has no public call that resends the SYN-ACK early (only its RTO rewinds
//!   what was sent), so that needs an upstream change;
//!   an orphan in TIME-WAIT is removed first, so a new connection may reuse the 4-tuple;
//! - otherwise, if the request is admitted (backlog, per-peer cap, socket table and its
//!   reserve, memory budget), one socket is put in LISTEN for it and takes it, or, if refused,
//!   none is and smoltcp answers with RST (counted by reason).
//!
//! A socket still in LISTEN after its packet (not taken, e.g. the outbound queue was full and the
//! packet stays queued) is removed at once ([`Stack::settle_accept`]), so none survives a step.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::task::{Poll, Waker};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::AnySocket;
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, IpEndpoint};

use super::{HALF_OPEN_TIMEOUT, ORPHAN_LINGER, Orphan, Refusal, Stack, Timed};
use crate::netstack::config::PeerTag;
use crate::netstack::device::Syn;
use crate::netstack::error::NetstackError;

/// Identifies a listener inside the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ListenerId(usize);

/// A connection taken from a listener's accept queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Accepted {
    pub(crate) handle: SocketHandle,
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
    pub(crate) peer: Option<PeerTag>,
}

#[derive(Debug)]
pub(super) struct Listener {
    pub(super) endpoint: IpEndpoint,
    /// Sockets that took a SYN and have not completed the handshake yet.
    pub(super) half_open: Vec<Timed>,
    /// Established connections waiting for `accept`.
    ready: VecDeque<Accepted>,
    waker: Option<Waker>,
}

/// A socket put in LISTEN for one connection request (see [`Stack::settle_accept`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prepared {
    listener: usize,
    handle: SocketHandle,
}

impl Stack {
    /// Starts listening on `addr` (which must be one of our addresses, port non-zero).
    pub(crate) fn listen(&mut self, addr: SocketAddr) -> Result<ListenerId, NetstackError> {
        if addr.port() == 0 {
            return Err(NetstackError::PortZero);
        }
        if !self.iface.has_ip_addr(IpAddress::from(addr.ip())) {
            return Err(NetstackError::AddressNotLocal(addr.ip()));
        }
        let endpoint = IpEndpoint::from(addr);
        if self
            .listeners
            .iter()
            .flatten()
            .any(|l| l.endpoint == endpoint)
        {
            return Err(NetstackError::AddrInUse(addr));
        }
        let listener = Listener {
            endpoint,
            half_open: Vec::new(),
            ready: VecDeque::new(),
            waker: None,
        };
        let id = match self.listeners.iter().position(Option::is_none) {
            Some(i) => {
                self.listeners[i] = Some(listener);
                ListenerId(i)
            }
            None => {
                self.listeners.push(Some(listener));
                ListenerId(self.listeners.len() - 1)
            }
        };
        Ok(id)
    }

    /// Stops a listener: pending connections are reset.
    pub(crate) fn unlisten(&mut self, id: ListenerId) {
        let Some(l) = self.listeners.get_mut(id.0).and_then(Option::take) else {
            return;
        };
        let pending = l.half_open.iter().map(|t| t.handle);
        let pending: Vec<_> = pending.chain(l.ready.iter().map(|a| a.handle)).collect();
        for h in pending {
            self.sockets.get_mut::<tcp::Socket>(h).abort();
            self.orphans.push(Orphan {
                timed: Timed::new(h),
                limit: ORPHAN_LINGER,
                drain: false,
            });
        }
    }

    /// Takes an established connection from the accept queue, or registers `waker`.
    pub(crate) fn poll_accept(&mut self, id: ListenerId, waker: &Waker) -> Poll<Option<Accepted>> {
        let Some(l) = self.listeners.get_mut(id.0).and_then(Option::as_mut) else {
            return Poll::Ready(None);
        };
        match l.ready.pop_front() {
            Some(a) => Poll::Ready(Some(a)),
            None => {
                l.waker = Some(waker.clone());
                Poll::Pending
            }
        }
    }

    /// Called right before smoltcp processes a connection request from `peer` (see the
    /// module docs). Returns the LISTEN socket created for it, if any.
    pub(super) fn prepare_accept(&mut self, syn: Syn, peer: Option<PeerTag>) -> Option<Prepared> {
        let li = self
            .listeners
            .iter()
            .position(|l| l.as_ref().is_some_and(|l| l.endpoint == syn.local))?;
        let mut existing = None;
        for (h, s) in self.sockets.iter_mut() {
            let Some(s) = tcp::Socket::downcast_mut(s) else {
                continue;
            };
            match s.state() {
                // Only `prepare_accept` creates LISTEN sockets and `settle_accept` removes
                // them; any other one is a half-open connection that an RST sent back to
                // LISTEN. It must not take this SYN: close it (bookkeeping removes it).
                State::Listen => s.abort(),
                State::Closed => {}
                state => {
                    if s.local_endpoint() == Some(syn.local)
                        && s.remote_endpoint() == Some(syn.remote)
                    {
                        existing = Some((h, state));
                    }
                }
            }
        }
        match existing {
            Some((h, State::TimeWait)) if self.orphans.iter().any(|o| o.timed.handle == h) => {
                self.orphans.retain(|o| o.timed.handle != h);
                self.remove(h);
            }
            Some(_) => {
                self.counters.duplicate_syns.inc();
                return None;
            }
            None => {}
        }
        let held = peer.map_or(0, |p| self.per_peer.get(&p).copied().unwrap_or(0));
        let l = self.listeners[li].as_ref()?;
        let verdict = if l.half_open.len() + l.ready.len() >= self.params.backlog {
            Err(Refusal::Backlog)
        } else {
            self.admit(peer, held)
        };
        let handle = match verdict.and_then(|()| self.create(peer)) {
            Ok(h) => h,
            Err(why) => {
                self.refused(why, &syn.remote);
                return None;
            }
        };
        // Cannot fail: the socket is fresh (closed) and the port is non-zero.
        let _ = self
            .sockets
            .get_mut::<tcp::Socket>(handle)
            .listen(syn.local);
        self.listeners[li]
            .as_mut()?
            .half_open
            .push(Timed::new(handle));
        Some(Prepared {
            listener: li,
            handle,
        })
    }

    /// After smoltcp's step: a prepared socket that did not take its SYN is removed.
    pub(super) fn settle_accept(&mut self, p: Prepared) {
        if self.sockets.get::<tcp::Socket>(p.handle).state() != State::Listen {
            return;
        }
        if let Some(l) = self.listeners.get_mut(p.listener).and_then(Option::as_mut) {
            l.half_open.retain(|t| t.handle != p.handle);
        }
        self.remove(p.handle);
    }

    /// Promotes established half-open sockets to the accept queue, removes half-open sockets
    /// that fell back to LISTEN or closed, resets stale ones. True when it aborted a socket.
    pub(super) fn listener_bookkeeping(&mut self, now: Instant) -> bool {
        let mut aborted = false;
        for li in 0..self.listeners.len() {
            let mut i = 0;
            while let Some(l) = self.listeners[li].as_mut() {
                let Some(t) = l.half_open.get_mut(i) else {
                    break;
                };
                let h = t.handle;
                let socket = self.sockets.get_mut::<tcp::Socket>(h);
                match socket.state() {
                    State::SynReceived => {
                        if t.expired(now, HALF_OPEN_TIMEOUT) {
                            socket.abort();
                            aborted = true;
                            l.half_open.swap_remove(i);
                            self.orphans.push(Orphan {
                                timed: Timed::new(h),
                                limit: ORPHAN_LINGER,
                                drain: false,
                            });
                        } else {
                            i += 1;
                        }
                    }
                    state => match (socket.local_endpoint(), socket.remote_endpoint()) {
                        (Some(lo), Some(re)) if state != State::Listen && socket.is_open() => {
                            let peer = self.meta.get(&h).and_then(|m| m.peer);
                            l.ready.push_back(Accepted {
                                handle: h,
                                local: SocketAddr::from(lo),
                                remote: SocketAddr::from(re),
                                peer,
                            });
                            l.half_open.swap_remove(i);
                            if let Some(w) = l.waker.take() {
                                w.wake();
                            }
                        }
                        _ => {
                            // RST during the handshake (back to LISTEN), closed or timed out:
                            // nothing to accept.
                            l.half_open.swap_remove(i);
                            self.remove(h);
                        }
                    },
                }
            }
        }
        aborted
    }
}
