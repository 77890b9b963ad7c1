//! The `marketsync` binary: a thin wrapper around [`marketsync::cli::main`], and the
//! process's allocator.
//!
//! Why jemalloc: with 10,000 accounts the daemon's catch-up burst (and parsing a large
//! configuration) frees tens of MB that glibc malloc kept resident for good (issue 3:
//! RSS of an idle daemon). jemalloc's background threads purge dirty pages after its
//! decay time (10 s), so an idle daemon shrinks back to what it really holds. The
//! `unprefixed` build also serves SQLite's own allocations.

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    // Without background threads jemalloc purges only when it allocates, and an idle
    // daemon hardly does: freed pages would stay resident.
    if let Err(err) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!(
            "marketsync: cannot start the allocator's background threads ({err}); memory freed after a burst returns to the OS more slowly"
        );
    }
    match marketsync::cli::main() {
        Ok(code) => std::process::exit(code),
        // The reader of stdout went away (`| head`): it has what it wanted.
        Err(err) if marketsync::cli::is_broken_pipe(&err) => std::process::exit(0),
        Err(err) => {
            eprintln!("marketsync: {err:#}");
            std::process::exit(2);
        }
    }
}
