//! Userspace TCP/IP (filled in by the overlay issue).
