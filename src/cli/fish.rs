//! fish completions for the values of positional arguments (`wgagent signal AGENT ID <TAB>`
//! offers kill, terminate, interrupt, hangup; `wgagent completions <TAB>` the shells).
//!
//! Why this exists: clap_complete's fish generator (4.6, `aot/shells/fish.rs`,
//! `gen_fish_inner`) writes `complete` lines for options (`get_opts`) and flags only; a
//! positional argument only decides whether files are offered, so its possible values never
//! reach the script, whatever its value parser offers (bash and zsh get them). Upstream:
//! clap-rs/clap#6295, open. The lines here are appended to clap_complete's script and are read
//! from the same clap definition, so values and help texts cannot drift from the parser.
//!
//! fish cannot tell by itself which positional slot the cursor is in, so each such argument's
//! condition asks `__fish_wgagent_at_positional VERB SLOT SPECS...`: it parses the words
//! before the cursor with fish's `argparse` (the global options, then the verb's, from the
//! same definition), so options and their values are not counted and `--` ends the options,
//! as clap parses them.
//!
//! Leaves out: nested subcommands (wgagent has none) and slots behind a positional that takes
//! several values (their position is not known before parsing); those get no values, as
//! before.

use std::fmt::Write as _;

use clap::Command;

/// The fish lines for every positional argument with possible values of `cmd`'s verbs, for
/// the program `bin`. Empty when there is none.
pub fn positional_values(cmd: &mut Command, bin: &str) -> String {
    cmd.build();
    let name = bin.replace('-', "_");
    let mut verbs = String::new();
    for verb in cmd.get_subcommands() {
        let lines = verb_lines(verb, bin, &name);
        if lines.is_empty() {
            continue;
        }
        let _ = writeln!(
            verbs,
            "function __fish_{name}_{}_optspecs\n    string join \\n{}\nend",
            verb.get_name().replace('-', "_"),
            optspecs(verb)
        );
        verbs.push_str(&lines);
    }
    if verbs.is_empty() {
        return verbs;
    }
    format!(
        "
# Values of positional arguments (added by {bin}: clap_complete's fish generator completes
# options only). True when the cursor is in positional slot SLOT of VERB.
function __fish_{name}_at_positional
    set -l verb $argv[1]
    set -l slot $argv[2]
    set -e argv[1..2]
    set -l specs $argv
    set -l words (commandline -opc)
    set -e words[1]
    argparse -s{global} -- $words 2>/dev/null
    or return 1
    test \"$argv[1]\" = \"$verb\"
    or return 1
    set -e argv[1]
    argparse $specs -- $argv 2>/dev/null
    or return 1
    test (count $argv) -eq (math $slot - 1)
end
{verbs}",
        global = optspecs(cmd),
    )
}

/// The `complete` lines of `verb`'s positional arguments that have possible values.
fn verb_lines(verb: &Command, bin: &str, name: &str) -> String {
    let mut out = String::new();
    let mut positionals: Vec<_> = verb.get_positionals().collect();
    positionals.sort_by_key(|a| a.get_index());
    for (slot, arg) in positionals.iter().enumerate() {
        let single = |a: &clap::Arg| a.get_num_args().is_some_and(|r| r.max_values() == 1);
        // A slot is known only while every positional before it (and itself) takes one value.
        if !positionals[..=slot].iter().all(|a| single(a)) {
            break;
        }
        let condition = format!(
            "__fish_{name}_at_positional {} {} (__fish_{name}_{}_optspecs)",
            verb.get_name(),
            slot + 1,
            verb.get_name().replace('-', "_"),
        );
        for value in arg.get_possible_values() {
            if value.is_hide_set() {
                continue;
            }
            let _ = write!(
                out,
                "complete -c {bin} -n \"{condition}\" -f -a '{}'",
                quote(value.get_name())
            );
            if let Some(help) = value.get_help() {
                let _ = write!(out, " -d '{}'", quote(&help.to_string().replace('\n', " ")));
            }
            out.push('\n');
        }
    }
    out
}

/// `cmd`'s options as `argparse` option specs (` 'c/config=' 'json' ...`), as clap_complete
/// writes the global ones.
fn optspecs(cmd: &Command) -> String {
    let mut specs = String::new();
    for arg in cmd.get_arguments().filter(|a| !a.is_positional()) {
        let mut spec = String::new();
        if let Some(short) = arg.get_short() {
            spec.push(short);
        }
        if let Some(long) = arg.get_long() {
            if !spec.is_empty() {
                spec.push('/');
            }
            spec.push_str(long);
        }
        if spec.is_empty() {
            continue;
        }
        match arg.get_num_args() {
            Some(r) if !r.takes_values() => {}
            Some(r) if r.min_values() == 0 => spec.push_str("=?"),
            _ => spec.push('='),
        }
        let _ = write!(specs, " '{}'", quote(&spec));
    }
    specs
}

/// Text for inside fish single quotes.
fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_values_only_where_the_slot_is_known() {
        let mut cmd = Command::new("prog")
            .subcommand(
                Command::new("send")
                    .arg(clap::Arg::new("to").required(true))
                    .arg(clap::Arg::new("how").value_parser(["fast", "it's slow"]))
                    .arg(
                        clap::Arg::new("level")
                            .long("level")
                            .short('l')
                            .value_parser(["1", "2"]),
                    )
                    .arg(
                        clap::Arg::new("quiet")
                            .long("quiet")
                            .action(clap::ArgAction::SetTrue),
                    ),
            )
            .subcommand(Command::new("plain").arg(clap::Arg::new("x")))
            .subcommand(
                Command::new("many")
                    .arg(clap::Arg::new("files").num_args(1..))
                    .arg(clap::Arg::new("mode").value_parser(["a", "b"]).last(true)),
            );
        let script = positional_values(&mut cmd, "prog");
        assert!(
            script.contains(
                "complete -c prog -n \"__fish_prog_at_positional send 2 \
                 (__fish_prog_send_optspecs)\" -f -a 'fast'\n"
            ),
            "{script}"
        );
        assert!(script.contains("-a 'it\\'s slow'"), "{script}");
        assert!(
            script.contains("string join \\n 'l/level=' 'quiet' 'h/help'"),
            "{script}"
        );
        // Options' values are clap_complete's business; verbs without such positionals and
        // slots behind a variadic positional get nothing.
        assert!(!script.contains("-a '1'"), "{script}");
        assert!(
            !script.contains("plain") && !script.contains("many"),
            "{script}"
        );

        let mut none = Command::new("prog").subcommand(Command::new("plain"));
        assert_eq!(positional_values(&mut none, "prog"), "");
    }
}
