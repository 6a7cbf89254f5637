//! The benchmarks live in `benches/` (criterion) and `src/bin/` (the load generators); this
//! empty binary is only the package's default target.

fn main() {}
