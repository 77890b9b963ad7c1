//! The supervision tree: the Root, the AccountsSupervisor, one Account actor per account
//! and Housekeeping.
//!
//! May use: everything below (`shapes` and down). May not touch: `app`, `http`, `cli`,
//! the raw configuration.

pub mod account;
pub mod root;
pub mod supervisor;
