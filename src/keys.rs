//! x25519 keys (filled in by the overlay issue).
