//! The `marketsync` binary: a thin wrapper around [`marketsync::cli::main`].

fn main() {
    match marketsync::cli::main() {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            eprintln!("marketsync: {err:#}");
            std::process::exit(2);
        }
    }
}
