//! The integration suite: one test binary (link time matters on two cores), with
//! modules under `suite/`. Tests run over real HTTP against the simulator and on real
//! SQLite files.

mod common;
mod suite;
