//! Criterion benchmarks for `gpusched` (in `benches/benches/`), each measured side by side with
//! its baseline in the same run.
