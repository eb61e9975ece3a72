//! Listeners of the stack: one LISTEN socket per endpoint, replaced as soon as it takes a SYN
//! (so a burst of SYNs from several peers is not reset), a half-open set, and a bounded accept
//! queue (the tailscale-rs pattern; never the one-socket swap).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::task::{Poll, Waker};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, State};
use smoltcp::time::Instant;
use smoltcp::wire::{IpAddress, IpEndpoint};

use super::{HALF_OPEN_TIMEOUT, Stack, Timed, new_socket};
use crate::netstack::NetstackError;

/// Identifies a listener inside the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ListenerId(usize);

/// A connection taken from a listener's accept queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Accepted {
    pub(crate) handle: SocketHandle,
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
}

#[derive(Debug)]
pub(super) struct Listener {
    pub(super) endpoint: IpEndpoint,
    /// The one socket in LISTEN for this endpoint (None while the backlog or the socket limit
    /// is reached: SYNs are then answered with RST by smoltcp).
    listening: Option<SocketHandle>,
    /// Sockets that left LISTEN and have not completed the handshake yet.
    pub(super) half_open: Vec<Timed>,
    /// Established connections waiting for `accept`.
    ready: VecDeque<Accepted>,
    waker: Option<Waker>,
    /// Set while no LISTEN socket could be created (counted once per episode).
    saturated: bool,
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
            listening: None,
            half_open: Vec::new(),
            ready: VecDeque::new(),
            waker: None,
            saturated: false,
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
        self.replenish(id);
        Ok(id)
    }

    /// Stops a listener: its LISTEN socket is closed, pending connections are reset.
    pub(crate) fn unlisten(&mut self, id: ListenerId) {
        let Some(l) = self.listeners.get_mut(id.0).and_then(Option::take) else {
            return;
        };
        if let Some(h) = l.listening {
            self.remove(h);
        }
        let pending = l.half_open.iter().map(|t| t.handle);
        let pending: Vec<_> = pending.chain(l.ready.iter().map(|a| a.handle)).collect();
        for h in pending {
            self.sockets.get_mut::<tcp::Socket>(h).abort();
            self.orphans.push(Timed::new(h));
        }
    }

    /// Takes an established connection from the accept queue, or registers `waker`.
    pub(crate) fn poll_accept(&mut self, id: ListenerId, waker: &Waker) -> Poll<Option<Accepted>> {
        let Some(l) = self.listener(id) else {
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

    fn listener(&mut self, id: ListenerId) -> Option<&mut Listener> {
        self.listeners.get_mut(id.0).and_then(Option::as_mut)
    }

    pub(super) fn replenish_all(&mut self) {
        for i in 0..self.listeners.len() {
            self.replenish(ListenerId(i));
        }
    }

    /// Moves a LISTEN socket that took a SYN to the half-open set and puts a fresh LISTEN
    /// socket in its place, within the backlog and the socket limit.
    fn replenish(&mut self, id: ListenerId) {
        let Some(l) = self.listeners.get_mut(id.0).and_then(Option::as_mut) else {
            return;
        };
        if let Some(h) = l.listening
            && self.sockets.get::<tcp::Socket>(h).state() != State::Listen
        {
            l.half_open.push(Timed::new(h));
            l.listening = None;
        }
        if l.listening.is_some() {
            return;
        }
        if l.half_open.len() + l.ready.len() >= self.params.backlog
            || self.open >= self.params.max_sockets
        {
            if !l.saturated {
                l.saturated = true;
                self.counters.sockets_refused.inc();
                tracing::debug!(endpoint = %l.endpoint, "netstack: listener saturated, refusing SYNs");
            }
            return;
        }
        let mut socket = new_socket(&self.params);
        // Cannot fail: the socket is fresh (closed) and the port is non-zero.
        let _ = socket.listen(l.endpoint);
        l.saturated = false;
        self.open += 1;
        self.counters.sockets_open.set(self.open as u64);
        l.listening = Some(self.sockets.add(socket));
    }

    /// Promotes established half-open sockets to the accept queue, recycles half-open sockets
    /// that fell back to LISTEN or closed, resets stale ones. True when it aborted a socket.
    pub(super) fn listener_bookkeeping(&mut self, now: Instant) -> bool {
        let mut aborted = false;
        for i in 0..self.listeners.len() {
            let id = ListenerId(i);
            self.replenish(id);
            let Some(l) = self.listeners.get_mut(i).and_then(Option::as_mut) else {
                continue;
            };
            let mut i = 0;
            while i < l.half_open.len() {
                let t = &mut l.half_open[i];
                let socket = self.sockets.get_mut::<tcp::Socket>(t.handle);
                match socket.state() {
                    State::SynReceived => {
                        if t.expired(now, HALF_OPEN_TIMEOUT) {
                            socket.abort();
                            aborted = true;
                            self.orphans.push(Timed::new(t.handle));
                            l.half_open.swap_remove(i);
                        } else {
                            i += 1;
                        }
                    }
                    state => match (socket.local_endpoint(), socket.remote_endpoint()) {
                        (Some(lo), Some(re)) if state != State::Listen && socket.is_open() => {
                            l.ready.push_back(Accepted {
                                handle: t.handle,
                                local: SocketAddr::from(lo),
                                remote: SocketAddr::from(re),
                            });
                            l.half_open.swap_remove(i);
                            if let Some(w) = l.waker.take() {
                                w.wake();
                            }
                        }
                        _ => {
                            // RST during the handshake (back to LISTEN), closed or timed out:
                            // nothing to accept, recycle the socket.
                            let h = t.handle;
                            l.half_open.swap_remove(i);
                            self.sockets.remove(h);
                            self.open -= 1;
                        }
                    },
                }
            }
            self.replenish(id);
        }
        aborted
    }
}
