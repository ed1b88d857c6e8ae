//! Deterministic simulator of many nodes (lands next).
