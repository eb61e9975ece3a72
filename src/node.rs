//! Node = wg + netstack (filled in by the overlay issue).
