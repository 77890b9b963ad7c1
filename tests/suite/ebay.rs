//! eBay cursor streams end to end against the simulator.
