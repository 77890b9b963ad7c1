//! The supervision tree: the Root, the AccountsSupervisor, one Account actor per account
//! and Housekeeping.
//!
//! - `root`: the Root actor, which escalates infrastructure failures;
//! - `supervisor`: the AccountsSupervisor (restart policy, quarantine, stuck detection);
//! - `account`: the Account actor, one per configured account;
//! - `housekeeping`: lock hygiene and claim-history pruning on a timer.
//!
//! May use: everything below (`shapes` and down). May not touch: `app`, `http`, `cli`,
//! the raw configuration.

pub mod account;
pub mod housekeeping;
pub mod root;
pub mod supervisor;
