//! Rules about the command text itself, on top of the [`shell`](super::shell) tokenizer:
//! promoting a trailing lone `&` to a tracked background process, and the advisory
//! "this dumps a file" note. Both are conservative: when in doubt, change nothing.

use super::shell::{Op, Redir, Token, lex};

/// The note added when a foreground command looks like it just prints a file.
pub const FILE_DUMP_NOTE: &str = "This command prints a file. To read files, use the \
    read_file tool instead: it pages through large files with line numbers and gives the \
    content hash that edit_files and write_file can check, while shell output is capped at \
    32768 bytes.";

/// If `cmd` ends with a lone `&` (not `&&`, `|&`, `>&`, `&>`, and not quoted, escaped, inside a
/// substitution, a comment or a here-document), the command without it: the caller then runs
/// it as a tracked background process rather than letting `sh` orphan it. Only the `&` is
/// removed (and trailing whitespace): a comment or here-document body after it stays. `None` otherwise,
/// including for input the tokenizer cannot finish (`sh` will report that).
pub fn strip_background(cmd: &str) -> Option<String> {
    let lexed = lex(cmd);
    if !lexed.complete {
        return None;
    }
    let mut significant = lexed.tokens.iter().rev().filter(|t| {
        !matches!(
            t,
            Token::Op {
                op: Op::Newline,
                ..
            }
        )
    });
    let Some(Token::Op { op: Op::Amp, start }) = significant.next() else {
        return None;
    };
    // Something must precede the `&`, and it must end a command (`a | &` is a syntax error).
    match significant.next() {
        Some(Token::Word { .. }) | Some(Token::Op { op: Op::Close, .. }) => {}
        _ => return None,
    }
    // Remove only the `&` itself: a comment or here-document body may follow it. Line
    // continuations right before it (backslash, newline) must go too, or the command would end
    // in a lone backslash.
    let head = strip_continuations(&cmd[..*start]);
    let rest = format!("{head}{}", &cmd[*start + 1..]);
    Some(rest.trim_end().to_owned())
}

/// `text` without trailing blanks and backslash-newline continuations (an odd run of
/// backslashes before the newline; an even run is escaped backslashes and stays).
fn strip_continuations(text: &str) -> &str {
    let mut rest = text;
    loop {
        let t = rest.trim_end_matches([' ', '\t']);
        let Some(before_nl) = t.strip_suffix('\n') else {
            // Nothing (more) to strip: keep the original spacing when nothing was removed.
            return if rest.len() == text.len() {
                text
            } else {
                t.trim_end()
            };
        };
        let slashes = before_nl.len() - before_nl.trim_end_matches('\\').len();
        if slashes % 2 == 0 {
            return if rest.len() == text.len() {
                text
            } else {
                t.trim_end()
            };
        }
        rest = &before_nl[..before_nl.len() - 1];
    }
}

/// Whether `cmd` contains a stand-alone command that prints a file: `cat FILE…`,
/// `head`/`tail` of a file (not `tail -f`), with stdout not redirected and not piped, possibly
/// after `cd dir &&` or other commands. `cat` reading a pipe or a here-document, and anything
/// the tokenizer cannot finish, do not count.
pub fn is_file_dump(cmd: &str) -> bool {
    let lexed = lex(cmd);
    if !lexed.complete {
        return false;
    }
    pipelines(&lexed.tokens)
        .iter()
        .any(|p| p.len() == 1 && p[0].is_file_dump())
}

/// One simple command: its words and its redirections (operator, descriptor, target).
#[derive(Debug, Default)]
struct Simple {
    words: Vec<String>,
    redirects: Vec<(Redir, Option<u32>, Option<String>)>,
}

impl Simple {
    fn is_file_dump(&self) -> bool {
        // Skip `VAR=value` prefixes.
        let mut words = self.words.iter().skip_while(|w| is_assignment(w));
        let Some(name) = words.next() else {
            return false;
        };
        let name = name.rsplit('/').next().unwrap_or(name);
        let args: Vec<&str> = words.map(String::as_str).collect();
        let files = match name {
            "cat" => file_args(&args, &[]),
            "head" | "tail" => {
                let follows = args.iter().any(|a| {
                    *a == "--follow"
                        || a.starts_with("--follow=")
                        || (a.starts_with('-') && !a.starts_with("--") && a.contains(['f', 'F']))
                });
                if follows {
                    return false;
                }
                file_args(&args, &["-n", "-c", "--lines", "--bytes"])
            }
            _ => return false,
        };
        let stdin_from_file = self
            .redirects
            .iter()
            .any(|(op, fd, _)| *op == Redir::In && matches!(fd, None | Some(0)));
        let stdout_elsewhere = self
            .redirects
            .iter()
            .any(|(op, fd, target)| op.redirects_stdout(*fd, target.as_deref()));
        (files > 0 || stdin_from_file) && !stdout_elsewhere
    }
}

/// Counts operands that name files: not options, not an option's value, not `-` (stdin).
fn file_args(args: &[&str], takes_value: &[&str]) -> usize {
    let mut n = 0;
    let mut options_done = false;
    let mut iter = args.iter();
    while let Some(a) = iter.next() {
        if options_done || !a.starts_with('-') || *a == "-" {
            n += usize::from(*a != "-");
        } else if *a == "--" {
            options_done = true;
        } else if takes_value.contains(a) {
            iter.next();
        }
    }
    n
}

fn is_assignment(w: &str) -> bool {
    match w.split_once('=') {
        Some((name, _)) => {
            let mut chars = name.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

/// Groups tokens into pipelines (split on `&&`, `||`, `;`, `&`, newlines and parentheses),
/// each a list of simple commands (split on `|` and `|&`).
fn pipelines(tokens: &[Token]) -> Vec<Vec<Simple>> {
    let mut out = Vec::new();
    let mut pipe: Vec<Simple> = Vec::new();
    let mut cur = Simple::default();
    let mut iter = tokens.iter().peekable();
    let flush = |cur: &mut Simple, pipe: &mut Vec<Simple>| {
        if !cur.words.is_empty() || !cur.redirects.is_empty() {
            pipe.push(std::mem::take(cur));
        }
    };
    while let Some(t) = iter.next() {
        match t {
            Token::Word { text, .. } => cur.words.push(text.clone()),
            Token::Redirect { fd, op, .. } => {
                let target = match iter.peek() {
                    Some(Token::Word { text, .. }) => {
                        let t = text.clone();
                        iter.next();
                        Some(t)
                    }
                    _ => None,
                };
                cur.redirects.push((*op, *fd, target));
            }
            Token::Op {
                op: Op::Pipe | Op::PipeAmp,
                ..
            } => flush(&mut cur, &mut pipe),
            Token::Op { .. } => {
                flush(&mut cur, &mut pipe);
                if !pipe.is_empty() {
                    out.push(std::mem::take(&mut pipe));
                }
            }
        }
    }
    flush(&mut cur, &mut pipe);
    if !pipe.is_empty() {
        out.push(pipe);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn bg(cmd: &str, want: Option<&str>) {
        assert_eq!(strip_background(cmd).as_deref(), want, "{cmd:?}");
    }

    #[test]
    fn continuation_before_trailing_ampersand_is_removed() {
        assert_eq!(
            strip_background("sleep 1 \\\n&").as_deref(),
            Some("sleep 1")
        );
        assert_eq!(
            strip_background("python srv.py \\\n  > log 2>&1 \\\n  &").as_deref(),
            Some("python srv.py \\\n  > log 2>&1")
        );
        // An escaped backslash argument is not a continuation.
        assert_eq!(
            strip_background("echo \\\\ &").as_deref(),
            Some("echo \\\\")
        );
    }

    #[test]
    fn trailing_lone_ampersand_is_stripped() {
        bg("sleep 10 &", Some("sleep 10"));
        bg("sleep 10&", Some("sleep 10"));
        bg(
            "  python -m http.server 8000 &  \n",
            Some("  python -m http.server 8000"),
        );
        bg("sleep 1 & # start it", Some("sleep 1  # start it"));
        bg("cmd &> /dev/null &", Some("cmd &> /dev/null"));
        bg("cmd >log 2>&1 &", Some("cmd >log 2>&1"));
        bg("a && b &", Some("a && b"));
        bg("a & b &", Some("a & b"));
        bg("(cd x && make) &", Some("(cd x && make)"));
        bg("echo '&' &", Some("echo '&'"));
        bg(
            "cat <<EOF &\nbody &\nEOF\n",
            Some("cat <<EOF \nbody &\nEOF"),
        );
    }

    #[test]
    fn other_ampersands_are_left_alone() {
        for cmd in [
            "a && b",
            "a |& b",
            "make 2>&1",
            "echo err >&2",
            "cmd &>file",
            "cmd &>>file",
            "echo 'a &'",
            "echo \"a &\"",
            "echo a \\&",
            "echo a # and then &",
            "a & b",
            "a &&",
            "(sleep 5 &)",
            "x=$(sleep 1 &)",
            "echo `sleep 1 &`",
            "echo \"unterminated &",
            "cat <<EOF\na &\nEOF",
            "cat <<EOF\nnever closed &",
            "&",
            "  & ",
            "a | &",
            "a ; &",
            "",
        ] {
            bg(cmd, None);
        }
    }

    #[track_caller]
    fn dump(cmd: &str, want: bool) {
        assert_eq!(is_file_dump(cmd), want, "{cmd:?}");
    }

    #[test]
    fn file_dumps_are_noticed() {
        dump("cat README.md", true);
        dump("cat -n src/main.rs", true);
        dump("cat a b c", true);
        dump("/bin/cat file", true);
        dump("LC_ALL=C cat file", true);
        dump("cd /repo && cat Cargo.toml", true);
        dump("cd /repo; head -n 50 src/lib.rs", true);
        dump("head -50 file.txt", true);
        dump("tail -n 20 build.log", true);
        dump("tail -n +10 file", true);
        dump("cat file 2>&1", true);
        dump("cat file >&2", true);
        dump("cat < file", true);
        dump("make && cat out.log", true);
        dump("cat \"my file.txt\"", true);
    }

    #[test]
    fn other_commands_get_no_note() {
        for cmd in [
            "concatenate foo",
            "grep -r pattern",
            "rg -l pattern",
            "echo hi | cat",
            "cat",
            "cat -",
            "cat -n",
            "cat file | grep x",
            "cat file | head",
            "cat a b > c",
            "cat a >> c",
            "cat file &> out",
            "cat > f.txt <<'EOF'\nhello\nEOF",
            "cat <<EOF\nhello\nEOF",
            "cat <<< \"text\"",
            "tail -f app.log",
            "tail -F app.log",
            "tail --follow=name app.log",
            "head -n 5",
            "x=$(cat file)",
            "echo \"cat file\"",
            "sudo cat /etc/shadow",
            "head -n 5 -c",
            "cat 'unterminated",
            "# cat file",
            "",
        ] {
            dump(cmd, false);
        }
    }

    proptest::proptest! {
        #[test]
        fn rules_are_total(src in "[ a-z&|;<>()'\"\\$`#\n0-9=-]{0,40}") {
            let _ = is_file_dump(&src);
            if let Some(stripped) = strip_background(&src) {
                proptest::prop_assert!(stripped.len() < src.len());
                proptest::prop_assert_eq!(
                    stripped.matches('&').count() + 1,
                    src.trim_end().matches('&').count()
                );
            }
        }
    }
}
