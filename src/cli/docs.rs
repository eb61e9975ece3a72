//! `wgagent completions SHELL` and `wgagent man`: generated from the clap definition, so they
//! never drift from the real flags (`clap_complete`, `clap_mangen`).

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use super::Cli;

/// Prints the completion script for `shell` on stdout. fish's gets the values of positional
/// arguments added ([`super::fish`]), which clap_complete writes for the other shells only.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<()> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, &mut cmd, "wgagent", &mut out);
    if shell == clap_complete::Shell::Fish {
        out.write_all(super::fish::positional_values(&mut cmd, "wgagent").as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// Prints `wgagent(1)` on stdout, or with `dir` writes it and one page per verb
/// (`wgagent-exec(1)`, ...) there.
pub fn man(dir: Option<&Path>) -> anyhow::Result<()> {
    let cmd = Cli::command();
    let Some(dir) = dir else {
        let mut out = std::io::stdout().lock();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        out.flush()?;
        return Ok(());
    };
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let mut written = Vec::new();
    let mut page = |cmd: clap::Command, name: String| -> anyhow::Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd)
            .title(name.clone())
            .render(&mut buf)?;
        std::fs::write(&path, buf).with_context(|| path.display().to_string())?;
        written.push(path);
        Ok(())
    };
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("wgagent-{}", sub.get_name());
        let bin = format!("wgagent {}", sub.get_name());
        page(sub.clone().display_name(name.clone()).bin_name(bin), name)?;
    }
    page(cmd, "wgagent".to_owned())?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}
