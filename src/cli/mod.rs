//! Command line (filled in by the overlay issue).
