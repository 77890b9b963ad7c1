//! `marketsync completions bash|zsh|fish|elvish|powershell`: the shell completion script,
//! generated from the command-line definition (clap_complete), on stdout.

use clap::CommandFactory;

use super::Cli;

pub(super) fn command(shell: clap_complete::Shell) -> anyhow::Result<i32> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "marketsync", &mut out);
    super::write_stdout(&out)?;
    Ok(0)
}
