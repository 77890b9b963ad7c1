//! The supervision tree: the Root, the AccountsSupervisor, one Account actor per account
//! and Housekeeping.
//!
//! - `root`: the Root actor, which escalates infrastructure failures;
//! - `supervisor`: the AccountsSupervisor (restart policy, quarantine, stuck detection);
//! - `account`: the Account actor, one per configured account;
//! - `housekeeping`: lock hygiene and claim-history pruning on a timer.
//!
//! Layer 10 of docs/architecture.md. May use: everything up to `shapes`. May not touch: the
//! configuration or the surfaces.

pub mod account;
pub mod housekeeping;
pub mod root;
pub mod services;
pub mod supervisor;
