//! [`Session`]: a peer's boringtun `Tunn`, created when it is first needed and dropped again
//! when the peer stays idle.
//!
//! Why: a `Tunn` is 11,040 bytes (eight inline session slots with their AEAD keys), allocated
//! per peer whether it ever talks or not. A control daemon with 10,000 agents that are mostly
//! idle would hold ~110 MB of session slots for nothing. So a peer holds no `Tunn` until a
//! handshake initiation arrives from it or we must send to it, and (when the device has an
//! idle timeout, the control daemon's default) loses it again after carrying no data for that
//! long. What a peer must keep lives outside the `Tunn` and survives: its endpoint, counters,
//! last-handshake time (so `wg show`, metrics and the status stay right), name, allowed IPs.
//! The next packet to a peer without a session starts a handshake to the kept endpoint (one
//! extra round trip), exactly as after a session expired.
//!
//! What a peer that lost its session sees: nothing unusual. Its own session with us is still
//! valid for it; its keepalives into it are dropped here (and counted as `drop_no_session`),
//! and its boringtun timers re-handshake when that session is REJECT_AFTER_TIME (180 s) old, or
//! it answers the handshake we start when we next send to it.
//!
//! Replay: a new `Tunn` has not seen the peer's last handshake timestamp, so it accepts a
//! replayed old initiation once (as any WireGuard node does after a restart). The device
//! therefore does not learn an endpoint from an initiation answered by a new `Tunn`: only the
//! initiator's first data message (it sends a keepalive at once) proves the key and moves it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use boringtun::noise::Tunn;
use boringtun::noise::rate_limiter::RateLimiter;

use super::{PublicKey, StaticSecret};

/// A `Tunn` that was created or completed a handshake is kept at least this long (or the idle
/// timeout, if shorter) even without data: the peer that initiated usually sends what it
/// handshaked for within a round trip, and a session dropped in between would lose it.
pub(crate) const HANDSHAKE_GRACE: Duration = Duration::from_secs(10);

/// What creating a `Tunn` needs from the device.
pub(super) struct Keys<'a> {
    pub(super) private_key: &'a StaticSecret,
    pub(super) rate_limiter: &'a Arc<RateLimiter>,
}

/// One peer's session state: a `Tunn` or none, and the clock of its idleness.
#[derive(Default)]
pub(super) struct Session {
    tunn: Option<Box<Tunn>>,
    /// A `Tunn` was created or completed a handshake since the last tick.
    fresh: bool,
    /// When (as of the tick that noticed it) the `Tunn` was created or last handshaked.
    established_at: Option<Instant>,
    /// When (as of the tick that noticed it) data last flowed either way.
    last_data: Option<Instant>,
    /// The peer's data packet count (received + sent) at the last tick: keepalives and
    /// handshakes are not data.
    packets_seen: u64,
    /// Where a handshake we started towards a peer's unconfirmed address goes (its retries
    /// too), until a handshake completes: see `probe` in the device.
    probe: Option<SocketAddr>,
}

/// How the device's timer tick treats a session.
#[derive(Clone, Copy, Debug)]
pub(super) struct IdlePolicy {
    /// Drop the `Tunn` after this long without data; `None`: never.
    pub(super) timeout: Option<Duration>,
    /// Keep it regardless (a persistent keepalive is configured, or traffic waits for a
    /// handshake).
    pub(super) pinned: bool,
}

impl Session {
    /// The `Tunn`, if the peer has one now.
    pub(super) fn tunn(&mut self) -> Option<&mut Tunn> {
        self.tunn.as_deref_mut()
    }

    /// The peer has a `Tunn` now.
    pub(super) fn is_live(&self) -> bool {
        self.tunn.is_some()
    }

    /// The `Tunn`, created first if there is none. `index` is the peer's 24-bit receiver
    /// index. No keepalive inside boringtun: the device sends those itself, so that the
    /// interval can change without a new session.
    pub(super) fn get_or_create(
        &mut self,
        keys: &Keys<'_>,
        peer: PublicKey,
        preshared_key: Option<[u8; 32]>,
        index: u32,
    ) -> &mut Tunn {
        if self.tunn.is_none() {
            self.fresh = true;
        }
        self.tunn.get_or_insert_with(|| {
            Box::new(Tunn::new(
                keys.private_key.clone(),
                peer,
                preshared_key,
                None,
                index,
                Some(Arc::clone(keys.rate_limiter)),
            ))
        })
    }

    /// A handshake completed: the grace period starts again.
    pub(super) fn handshake_completed(&mut self) {
        self.fresh = true;
        self.probe = None;
    }

    /// Notes the address a handshake was started towards without it being the endpoint.
    pub(super) fn set_probe(&mut self, to: SocketAddr) {
        self.probe = Some(to);
    }

    /// Where the retries of a handshake started by [`Session::set_probe`] go.
    pub(super) fn probe(&self) -> Option<SocketAddr> {
        self.probe
    }

    /// Drops the `Tunn` (a new pre-shared key: the next one is created with it).
    pub(super) fn reset(&mut self) {
        if self.tunn.take().is_some() {
            freed(1);
        }
        self.established_at = None;
        self.probe = None;
    }

    /// The timer tick's bookkeeping: notes data (`packets` is the peer's received + sent data
    /// packet count) and drops the `Tunn` when the policy says so. True if it was dropped.
    pub(super) fn tick(&mut self, now: Instant, packets: u64, policy: IdlePolicy) -> bool {
        if packets != self.packets_seen {
            self.packets_seen = packets;
            self.last_data = Some(now);
        }
        if self.tunn.is_none() {
            return false;
        }
        if std::mem::take(&mut self.fresh) || self.established_at.is_none() {
            self.established_at = Some(now);
        }
        let Some(timeout) = policy.timeout else {
            return false;
        };
        if policy.pinned {
            return false;
        }
        let since = |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t));
        let quiet = since(self.last_data).is_none_or(|d| d >= timeout);
        let settled = since(self.established_at).is_some_and(|d| d >= timeout.min(HANDSHAKE_GRACE));
        if quiet && settled {
            self.reset();
            return true;
        }
        false
    }
}

/// Bytes of dropped `Tunn`s not yet handed back to the OS.
static FREED: AtomicUsize = AtomicUsize::new(0);

/// Hand freed heap back to the OS once this much was freed: glibc's allocator keeps freed
/// 11 KB chunks in its heap (resident) and only trims the top, so without this the memory of
/// sessions dropped after a handshake storm would stay resident until reused.
const TRIM_AFTER: usize = 4 << 20;

/// Notes `n` dropped `Tunn`s and trims the heap when enough accumulated.
fn freed(n: usize) {
    let bytes = n * std::mem::size_of::<Tunn>();
    if FREED.fetch_add(bytes, Ordering::Relaxed) + bytes >= TRIM_AFTER {
        FREED.store(0, Ordering::Relaxed);
        trim_heap();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    let t0 = Instant::now();
    // SAFETY: malloc_trim only releases free pages of the allocator's own arenas; it takes the
    // arena locks itself and has no preconditions.
    let released = unsafe { libc::malloc_trim(0) };
    tracing::debug!(released, took = ?t0.elapsed(), "returned freed session memory to the OS");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (StaticSecret, Arc<RateLimiter>) {
        let private = StaticSecret::from([7u8; 32]);
        let limiter = Arc::new(RateLimiter::new(&PublicKey::from(&private), 100));
        (private, limiter)
    }

    fn live(s: &mut Session) {
        let (private_key, rate_limiter) = keys();
        let k = Keys {
            private_key: &private_key,
            rate_limiter: &rate_limiter,
        };
        s.get_or_create(&k, PublicKey::from([9u8; 32]), None, 1);
    }

    const ON: IdlePolicy = IdlePolicy {
        timeout: Some(Duration::from_secs(60)),
        pinned: false,
    };

    #[test]
    fn starts_empty_and_is_created_once() {
        let mut s = Session::default();
        assert!(!s.is_live() && s.tunn().is_none());
        live(&mut s);
        let first: *const Tunn = s.tunn().unwrap();
        live(&mut s);
        assert_eq!(first, s.tunn().unwrap() as *const Tunn);
    }

    #[test]
    fn dropped_after_the_timeout_without_data_but_not_within_the_grace() {
        let t0 = Instant::now();
        let mut s = Session::default();
        live(&mut s);
        assert!(!s.tick(t0, 0, ON));
        // Never carried data: only the handshake grace keeps it.
        assert!(!s.tick(t0 + HANDSHAKE_GRACE - Duration::from_secs(1), 0, ON));
        assert!(s.tick(t0 + HANDSHAKE_GRACE, 0, ON));
        assert!(!s.is_live());
        // Nothing to drop any more.
        assert!(!s.tick(t0 + HANDSHAKE_GRACE * 2, 0, ON));
    }

    #[test]
    fn data_keeps_it_for_the_timeout() {
        let t0 = Instant::now();
        let mut s = Session::default();
        live(&mut s);
        assert!(!s.tick(t0, 1, ON));
        assert!(!s.tick(t0 + Duration::from_secs(50), 2, ON));
        // 59 s after the last data: kept; 60 s: dropped.
        assert!(!s.tick(t0 + Duration::from_secs(109), 2, ON));
        assert!(s.tick(t0 + Duration::from_secs(110), 2, ON));
    }

    #[test]
    fn a_new_handshake_restarts_the_grace() {
        let t0 = Instant::now();
        let mut s = Session::default();
        live(&mut s);
        assert!(!s.tick(t0, 0, ON));
        s.handshake_completed();
        assert!(!s.tick(t0 + Duration::from_secs(9), 0, ON));
        assert!(!s.tick(t0 + Duration::from_secs(18), 0, ON));
        assert!(s.tick(t0 + Duration::from_secs(19), 0, ON));
    }

    #[test]
    fn pinned_or_without_timeout_it_stays() {
        let t0 = Instant::now();
        let late = t0 + Duration::from_secs(3600);
        let mut s = Session::default();
        live(&mut s);
        assert!(!s.tick(t0, 0, ON));
        let pinned = IdlePolicy { pinned: true, ..ON };
        assert!(!s.tick(late, 0, pinned));
        let off = IdlePolicy {
            timeout: None,
            pinned: false,
        };
        assert!(!s.tick(late, 0, off));
        assert!(s.is_live());
    }

    #[test]
    fn a_short_timeout_shortens_the_grace() {
        let t0 = Instant::now();
        let mut s = Session::default();
        live(&mut s);
        let short = IdlePolicy {
            timeout: Some(Duration::from_secs(2)),
            pinned: false,
        };
        assert!(!s.tick(t0, 0, short));
        assert!(s.tick(t0 + Duration::from_secs(2), 0, short));
    }
}
