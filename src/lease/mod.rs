//! Lease schedule and manager (placeholder, being written).
