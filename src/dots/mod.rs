//! Everything that speaks the Dots v2 API: the wire types, the HTTP client payrun uses, and the
//! stateful simulator that stands in for Dots in the demo, the tests and the benchmarks.
//!
//! The client and the simulator share only `types`; neither knows of the store or the jobs.

pub mod client;
pub mod limiter;
pub mod retry;
pub mod sim;
pub mod systemic;
pub mod types;
