//! The keyed job queue (StockX, Keepa) end to end against the simulator.
