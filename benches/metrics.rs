//! Metric encoder benchmarks (being written; see src/metrics/).
fn main() {}
