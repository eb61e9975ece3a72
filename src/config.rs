//! TOML configuration (filled in by the overlay issue).
