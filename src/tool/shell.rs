//! A small POSIX `sh` tokenizer, just deep enough for the tool rules: where a command line's
//! control operators are (so a trailing lone `&` can be told apart from `&&`, `|&`, `2>&1`,
//! `&>file`, a quoted `"&"` or an escaped `\&`), which words form each simple command, and what
//! is redirected where. Sans-IO and total: any input gives tokens, never a panic.
//!
//! Not a shell: no expansion, no alias or function knowledge, no `case` pattern syntax, no
//! grammar of compound commands. Quotes, escapes, comments, `$(…)`, `${…}`, backquotes and
//! here-document bodies are skipped correctly so that nothing inside them is mistaken for an
//! operator. Input the tokenizer cannot finish (an unterminated quote, substitution or
//! here-document) is reported as incomplete, and callers then leave the command alone.

/// A control operator (ends a command or a pipeline stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `&&`
    AndIf,
    /// `||`
    OrIf,
    /// `|`
    Pipe,
    /// `|&` (bash: pipe stdout and stderr)
    PipeAmp,
    /// `;`
    Semi,
    /// `;;` (and bash's `;&`, `;;&`)
    DSemi,
    /// a lone `&`: run the preceding command asynchronously
    Amp,
    /// `(`
    Open,
    /// `)`
    Close,
    /// an unescaped newline
    Newline,
}

/// A redirection operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Redir {
    /// `<`
    In,
    /// `>`
    Out,
    /// `>>`
    Append,
    /// `>|`
    Clobber,
    /// `<>`
    ReadWrite,
    /// `<&`
    DupIn,
    /// `>&`
    DupOut,
    /// `&>` (bash: stdout and stderr)
    AndOut,
    /// `&>>`
    AndAppend,
    /// `<<`
    HereDoc,
    /// `<<-`
    HereDocStrip,
    /// `<<<` (bash here-string)
    HereString,
}

impl Redir {
    /// Whether this operator, applied to `fd` (default by operator), sends stdout to a file.
    /// `>&N` only duplicates onto another descriptor, which the agent merges anyway.
    pub(crate) fn redirects_stdout(self, fd: Option<u32>, target: Option<&str>) -> bool {
        let on_stdout = matches!(fd, None | Some(1));
        match self {
            Redir::Out | Redir::Append | Redir::Clobber => on_stdout,
            Redir::AndOut | Redir::AndAppend => true,
            Redir::DupOut => {
                on_stdout && !target.is_some_and(|t| t.bytes().all(|b| b.is_ascii_digit()))
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    /// A word with quotes and escapes removed; `start` is its byte offset in the source.
    Word {
        text: String,
        start: usize,
    },
    Op {
        op: Op,
        start: usize,
    },
    /// A redirection; `fd` is an explicit descriptor written before it (`2>`). Its target is
    /// the next `Word`.
    Redirect {
        fd: Option<u32>,
        op: Redir,
        start: usize,
    },
}

/// The tokens of a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lexed {
    pub(crate) tokens: Vec<Token>,
    /// False when the input ends inside a quote, substitution or here-document.
    pub(crate) complete: bool,
}

/// Splits `src` into tokens (see the module doc for what is and is not understood).
pub(crate) fn lex(src: &str) -> Lexed {
    let mut lx = Lexer {
        b: src.as_bytes(),
        i: 0,
        tokens: Vec::new(),
        complete: true,
        pending: Vec::new(),
        want_delim: None,
    };
    lx.run();
    Lexed {
        tokens: lx.tokens,
        complete: lx.complete,
    }
}

struct Lexer<'a> {
    b: &'a [u8],
    i: usize,
    tokens: Vec<Token>,
    complete: bool,
    /// Here-documents whose bodies start after the next newline: (delimiter, strip tabs).
    pending: Vec<(Vec<u8>, bool)>,
    /// Set after `<<`/`<<-`: the next word is a delimiter (the bool: `<<-`).
    want_delim: Option<bool>,
}

impl Lexer<'_> {
    fn peek(&self, k: usize) -> Option<u8> {
        self.b.get(self.i + k).copied()
    }

    fn run(&mut self) {
        while let Some(c) = self.peek(0) {
            let start = self.i;
            match c {
                b' ' | b'\t' | b'\r' => self.i += 1,
                b'\\' if self.peek(1) == Some(b'\n') => self.i += 2,
                b'\n' => {
                    self.i += 1;
                    self.op(Op::Newline, start);
                    self.heredoc_bodies();
                }
                b'#' => {
                    while self.peek(0).is_some_and(|c| c != b'\n') {
                        self.i += 1;
                    }
                }
                b'&' => match (self.peek(1), self.peek(2)) {
                    (Some(b'&'), _) => self.op2(Op::AndIf, 2),
                    (Some(b'>'), Some(b'>')) => self.redir(None, Redir::AndAppend, 3, start),
                    (Some(b'>'), _) => self.redir(None, Redir::AndOut, 2, start),
                    _ => self.op2(Op::Amp, 1),
                },
                b'|' => match self.peek(1) {
                    Some(b'|') => self.op2(Op::OrIf, 2),
                    Some(b'&') => self.op2(Op::PipeAmp, 2),
                    _ => self.op2(Op::Pipe, 1),
                },
                b';' => match (self.peek(1), self.peek(2)) {
                    (Some(b';'), Some(b'&')) => self.op2(Op::DSemi, 3),
                    (Some(b';' | b'&'), _) => self.op2(Op::DSemi, 2),
                    _ => self.op2(Op::Semi, 1),
                },
                b'(' => self.op2(Op::Open, 1),
                b')' => self.op2(Op::Close, 1),
                b'<' | b'>' => self.redirection(None, start),
                _ => self.word(),
            }
        }
        if !self.pending.is_empty() || self.want_delim.is_some() {
            self.complete = false;
        }
    }

    fn op(&mut self, op: Op, start: usize) {
        self.tokens.push(Token::Op { op, start });
    }

    fn op2(&mut self, op: Op, len: usize) {
        let start = self.i;
        self.i += len;
        self.op(op, start);
    }

    fn redir(&mut self, fd: Option<u32>, op: Redir, len: usize, start: usize) {
        self.i += len;
        if matches!(op, Redir::HereDoc | Redir::HereDocStrip) {
            self.want_delim = Some(op == Redir::HereDocStrip);
        }
        self.tokens.push(Token::Redirect { fd, op, start });
    }

    /// At `<` or `>`: reads the longest redirection operator.
    fn redirection(&mut self, fd: Option<u32>, start: usize) {
        let (c1, c2) = (self.peek(1), self.peek(2));
        let (op, len) = match (self.peek(0), c1, c2) {
            (Some(b'<'), Some(b'<'), Some(b'<')) => (Redir::HereString, 3),
            (Some(b'<'), Some(b'<'), Some(b'-')) => (Redir::HereDocStrip, 3),
            (Some(b'<'), Some(b'<'), _) => (Redir::HereDoc, 2),
            (Some(b'<'), Some(b'&'), _) => (Redir::DupIn, 2),
            (Some(b'<'), Some(b'>'), _) => (Redir::ReadWrite, 2),
            (Some(b'<'), _, _) => (Redir::In, 1),
            (_, Some(b'>'), _) => (Redir::Append, 2),
            (_, Some(b'&'), _) => (Redir::DupOut, 2),
            (_, Some(b'|'), _) => (Redir::Clobber, 2),
            _ => (Redir::Out, 1),
        };
        self.redir(fd, op, len, start);
    }

    fn word(&mut self) {
        let start = self.i;
        let mut text = Vec::new();
        while let Some(c) = self.peek(0) {
            match c {
                b' ' | b'\t' | b'\r' | b'\n' | b'&' | b'|' | b';' | b'(' | b')' | b'<' | b'>' => {
                    break;
                }
                b'\\' => match self.peek(1) {
                    Some(b'\n') => self.i += 2,
                    Some(n) => {
                        text.push(n);
                        self.i += 2;
                    }
                    None => {
                        text.push(b'\\');
                        self.i += 1;
                    }
                },
                b'\'' => match memchr(b'\'', &self.b[self.i + 1..]) {
                    Some(k) => {
                        text.extend_from_slice(&self.b[self.i + 1..self.i + 1 + k]);
                        self.i += k + 2;
                    }
                    None => self.unterminated(&mut text),
                },
                b'"' => self.double_quoted(&mut text),
                b'$' if matches!(self.peek(1), Some(b'(' | b'{')) => {
                    let from = self.i;
                    match skip_group(self.b, self.i + 1) {
                        Some(end) => {
                            text.extend_from_slice(&self.b[from..end]);
                            self.i = end;
                        }
                        None => self.unterminated(&mut text),
                    }
                }
                b'`' => match skip_backquote(self.b, self.i) {
                    Some(end) => {
                        text.extend_from_slice(&self.b[self.i..end]);
                        self.i = end;
                    }
                    None => self.unterminated(&mut text),
                },
                _ => {
                    text.push(c);
                    self.i += 1;
                }
            }
        }
        // An all-digit word written right against `<`/`>` is a descriptor number (`2>&1`).
        let raw = &self.b[start..self.i];
        if !raw.is_empty()
            && raw.len() <= 9
            && raw.iter().all(u8::is_ascii_digit)
            && matches!(self.peek(0), Some(b'<' | b'>'))
        {
            let fd = std::str::from_utf8(raw).ok().and_then(|s| s.parse().ok());
            self.redirection(fd, start);
            return;
        }
        if let Some(strip) = self.want_delim.take() {
            self.pending.push((text.clone(), strip));
        }
        self.tokens.push(Token::Word {
            text: String::from_utf8_lossy(&text).into_owned(),
            start,
        });
    }

    /// At `"`: copies the quoted text with its escapes resolved; substitutions stay verbatim.
    fn double_quoted(&mut self, text: &mut Vec<u8>) {
        let mut j = self.i + 1;
        while let Some(&c) = self.b.get(j) {
            match c {
                b'"' => {
                    self.i = j + 1;
                    return;
                }
                b'\\' => match self.b.get(j + 1) {
                    Some(b'\n') => j += 2,
                    Some(&n @ (b'$' | b'`' | b'"' | b'\\')) => {
                        text.push(n);
                        j += 2;
                    }
                    _ => {
                        text.push(b'\\');
                        j += 1;
                    }
                },
                b'$' if matches!(self.b.get(j + 1), Some(b'(' | b'{')) => {
                    match skip_group(self.b, j + 1) {
                        Some(end) => {
                            text.extend_from_slice(&self.b[j..end]);
                            j = end;
                        }
                        None => break,
                    }
                }
                b'`' => match skip_backquote(self.b, j) {
                    Some(end) => {
                        text.extend_from_slice(&self.b[j..end]);
                        j = end;
                    }
                    None => break,
                },
                _ => {
                    text.push(c);
                    j += 1;
                }
            }
        }
        self.i = j;
        self.unterminated(text);
    }

    /// The input ends inside a construct: keep the rest as word text and mark the lex incomplete.
    fn unterminated(&mut self, text: &mut Vec<u8>) {
        text.extend_from_slice(&self.b[self.i.min(self.b.len())..]);
        self.i = self.b.len();
        self.complete = false;
    }

    /// After a newline: skips the bodies of the here-documents opened on the line just ended.
    fn heredoc_bodies(&mut self) {
        for (delim, strip) in std::mem::take(&mut self.pending) {
            loop {
                if self.i >= self.b.len() {
                    self.complete = false;
                    return;
                }
                let end = memchr(b'\n', &self.b[self.i..]).map_or(self.b.len(), |k| self.i + k);
                let mut line = &self.b[self.i..end];
                if strip {
                    while let [b'\t', rest @ ..] = line {
                        line = rest;
                    }
                }
                self.i = (end + 1).min(self.b.len());
                if line == delim.as_slice() {
                    break;
                }
            }
        }
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// At `b[open]` == `(` or `{`: the index just after its matching closer, skipping quotes,
/// escapes and nested groups. `None` when the input ends first.
fn skip_group(b: &[u8], open: usize) -> Option<usize> {
    let mut stack = vec![closer(*b.get(open)?)];
    let mut j = open + 1;
    while let Some(&c) = b.get(j) {
        match c {
            b'\\' => j += 1,
            b'\'' => j += 1 + memchr(b'\'', &b[j + 1..])?,
            b'"' => {
                j += 1;
                while *b.get(j)? != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
            }
            b'`' => j = skip_backquote(b, j)? - 1,
            b'(' | b'{' => stack.push(closer(c)),
            b')' | b'}' if stack.last() == Some(&c) => {
                stack.pop();
                if stack.is_empty() {
                    return Some(j + 1);
                }
            }
            _ => {}
        }
        j += 1;
    }
    None
}

fn closer(open: u8) -> u8 {
    if open == b'(' { b')' } else { b'}' }
}

/// At a backquote: the index just after the matching unescaped one.
fn skip_backquote(b: &[u8], at: usize) -> Option<usize> {
    let mut j = at + 1;
    while let Some(&c) = b.get(j) {
        match c {
            b'\\' => j += 2,
            b'`' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(src: &str) -> Vec<String> {
        lex(src)
            .tokens
            .into_iter()
            .filter_map(|t| match t {
                Token::Word { text, .. } => Some(text),
                _ => None,
            })
            .collect()
    }

    fn ops(src: &str) -> Vec<Op> {
        lex(src)
            .tokens
            .into_iter()
            .filter_map(|t| match t {
                Token::Op { op, .. } => Some(op),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn operators_are_told_apart() {
        assert_eq!(
            ops("a && b || c | d |& e ; f & g"),
            [
                Op::AndIf,
                Op::OrIf,
                Op::Pipe,
                Op::PipeAmp,
                Op::Semi,
                Op::Amp
            ]
        );
        assert_eq!(
            ops("(a)\nb;;"),
            [Op::Open, Op::Close, Op::Newline, Op::DSemi]
        );
        assert_eq!(ops("a&b"), [Op::Amp]);
    }

    #[test]
    fn redirections_with_and_without_descriptors() {
        let toks = lex("cmd 2>&1 >&2 &>f &>>g >>h <i <<<s 10>x").tokens;
        let redirs: Vec<_> = toks
            .iter()
            .filter_map(|t| match t {
                Token::Redirect { fd, op, .. } => Some((*fd, *op)),
                _ => None,
            })
            .collect();
        assert_eq!(
            redirs,
            [
                (Some(2), Redir::DupOut),
                (None, Redir::DupOut),
                (None, Redir::AndOut),
                (None, Redir::AndAppend),
                (None, Redir::Append),
                (None, Redir::In),
                (None, Redir::HereString),
                (Some(10), Redir::Out),
            ]
        );
        assert_eq!(words("cmd 2>&1 >&2 &>f"), ["cmd", "1", "2", "f"]);
        // A number separated from the operator is an argument, not a descriptor.
        assert_eq!(words("echo 2 >f"), ["echo", "2", "f"]);
    }

    #[test]
    fn quotes_and_escapes_hide_operators() {
        assert_eq!(
            words(r#"echo 'a & b' "c && d" e\&f"#),
            ["echo", "a & b", "c && d", "e&f"]
        );
        assert!(ops(r#"echo 'a & b' "c && d" e\&f"#).is_empty());
        assert_eq!(words(r#"echo "x\"y\\z\q""#), ["echo", r#"x"y\z\q"#]);
        assert_eq!(words("echo a\\\nb"), ["echo", "ab"], "line continuation");
        assert_eq!(words("it's"), ["it's"]);
        assert!(!lex("it's").complete);
    }

    #[test]
    fn substitutions_are_single_words() {
        assert_eq!(words("x=$(a && b | c) y"), ["x=$(a && b | c)", "y"]);
        assert_eq!(words("echo $((1 + (2 & 3)))"), ["echo", "$((1 + (2 & 3)))"]);
        assert_eq!(
            words("echo ${x:-a&b} `a & b`"),
            ["echo", "${x:-a&b}", "`a & b`"]
        );
        assert_eq!(
            words(r#"echo "$(echo ")" &)""#),
            ["echo", r#"$(echo ")" &)"#]
        );
        assert!(ops("echo $(sleep 1 &)").is_empty());
        assert!(!lex("echo $(oops").complete);
        assert!(!lex("echo `oops").complete);
    }

    #[test]
    fn comments_run_to_end_of_line() {
        assert_eq!(
            words("echo a#b # c && d &\necho e"),
            ["echo", "a#b", "echo", "e"]
        );
        assert_eq!(ops("echo a # && &"), []);
    }

    #[test]
    fn heredoc_bodies_are_skipped() {
        let src = "cat > f <<'EOF' && echo ok\nhead x &\n$(a\nEOF\necho done &";
        assert_eq!(
            words(src),
            ["cat", "f", "EOF", "echo", "ok", "echo", "done"]
        );
        assert_eq!(ops(src), [Op::AndIf, Op::Newline, Op::Amp]);
        assert!(lex(src).complete);
        let stripped = "cat <<-END\n\tbody &\n\tEND\n";
        assert_eq!(words(stripped), ["cat", "END"]);
        assert!(lex(stripped).complete);
        assert!(!lex("cat <<EOF\nnever closed &").complete);
    }

    #[test]
    fn offsets_point_into_the_source() {
        let src = "sleep 1 &";
        let last = lex(src).tokens.pop();
        assert_eq!(
            last,
            Some(Token::Op {
                op: Op::Amp,
                start: 8
            })
        );
    }

    #[test]
    fn never_panics_on_odd_input() {
        for src in [
            "", "\\", "'", "\"", "$(", "${", "`", "<<", "2>", "&", "|||", "\"\\", "$(\"", "é&ü",
        ] {
            let _ = lex(src);
        }
        assert_eq!(words("é&ü"), ["é", "ü"]);
    }
}
