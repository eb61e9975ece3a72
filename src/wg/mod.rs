//! Userspace WireGuard (filled in by the overlay issue).
