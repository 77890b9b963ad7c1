//! `marketsync man`: the man page (roff), generated from the command-line definition
//! (clap_mangen), on stdout: `marketsync man > /usr/local/share/man/man1/marketsync.1`.

use clap::CommandFactory;

use super::Cli;

pub(super) fn command() -> anyhow::Result<i32> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    super::write_stdout(&out)?;
    Ok(0)
}
