//! Runs the deterministic simulator over many seeds (lands next).
fn main() {}
