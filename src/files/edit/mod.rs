//! Search/replace edits on text, as models write them: [`apply`] finds `search` in the file and
//! puts `replace` there, tolerating the whitespace and line-ending slips models make while
//! keeping the file's own style. Sans-IO: text in, text out.
//!
//! The matching cascade (the reference agent's, after openai/codex's `apply_patch`):
//! 1. exact substring;
//! 2. line by line, ignoring trailing spaces and tabs;
//! 3. line by line, ignoring all surrounding whitespace (indentation-tolerant).
//!
//! Line endings compare as equal across `\n`/`\r\n`, and a line without an ending (end of file)
//! matches any ending. A match must be unique unless `replace_all` is set. When passes 2 or 3
//! match, [`splice`] writes the replacement position by position (leading whitespace, body,
//! trailing whitespace, ending): where `search` and `replace` agree at a position, the file's
//! bytes win, so its indentation style and line endings survive; where they disagree, the caller
//! meant to change that position and the replacement's bytes win. Lines the replacement inserts
//! are re-indented from the caller's indent unit into the file's (4 spaces → tabs, …).
//!
//! A search that matches nowhere fails with a message a model can act on ([`hint`]): a line that
//! differs only in how often one character repeats (`=====` vs `=======`), or `search` and
//! `replace` swapped.

mod hint;
mod splice;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

use splice::{build_replacement, dominant_ending, internal_ending, rewrite_internal_ending};

/// One edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edit<'a> {
    /// The text to find; non-empty. Matched exactly first, then with the whitespace
    /// tolerance described in the module doc.
    pub search: &'a str,
    /// What to put in its place (empty deletes it).
    pub replace: &'a str,
    /// Replace every match instead of requiring exactly one.
    pub replace_all: bool,
}

/// Why an edit could not be applied. The messages are the reference agent's (log scrapers and
/// models key on their first sentence).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// `search` is empty. Fix the request.
    #[error("search string must not be empty; include the text you want to match")]
    EmptySearch,
    #[error(
        "search string matches {0} occurrences (expected exactly 1). Include more surrounding \
         context to make the match unique, or set replace_all to true"
    )]
    /// `search` matches this many places (more than one) and `replace_all` is off. Retry
    /// with more context in `search`, or with `replace_all`.
    Ambiguous(usize),
    /// `search` matches nowhere, even with the whitespace tolerance. Read the file again and
    /// retry with its current text.
    #[error(
        "search string not found in file. Verify the search string matches the file content \
         exactly, including whitespace and indentation{}",
        if hint.is_empty() { String::new() } else { format!(". {hint}") }
    )]
    NotFound {
        /// What nearly matched (see [`hint`]), a sentence appended to the message; empty
        /// when nothing did.
        hint: String,
    },
    /// `search` and `replace` use different line endings (the caller wants to change them), so
    /// only an exact match counts.
    #[error(
        "search string not found in file. Verify the search string matches the file content \
         exactly, including whitespace, indentation, and line endings"
    )]
    NotFoundExactEndings,
}

/// Applies one edit to `content`.
pub fn apply(content: &str, edit: Edit<'_>) -> Result<String, EditError> {
    let Edit {
        search,
        replace,
        replace_all,
    } = edit;
    // An empty search matches everywhere: with replace_all it would put the replacement
    // between every byte.
    if search.is_empty() {
        return Err(EditError::EmptySearch);
    }
    let content_lines = split_after(content);
    let search_lines = split_lines(search);
    let replace_lines = split_lines(replace);

    // Ending normalisation: a replacement with consistent internal endings gets the file's
    // dominant ending, unless search and replace disagree on endings (the caller means to
    // change them), which also restricts matching to pass 1.
    let search_internal = internal_ending(&search_lines);
    let replace_internal = internal_ending(&replace_lines);
    let forced = replace_internal.map(|_| dominant_ending(&content_lines));
    let caller_intent = matches!((search_internal, replace_internal), (Some(s), Some(r)) if s != r);

    // Pass 1: exact.
    if content.contains(search) {
        let replacement: Cow<'_, str> = match forced {
            Some(f) if !caller_intent && replace_internal != Some(f) => {
                Cow::Owned(rewrite_internal_ending(&replace_lines, f))
            }
            _ => Cow::Borrowed(replace),
        };
        if replace_all {
            return Ok(content.replace(search, &replacement));
        }
        let count = content.matches(search).count();
        if count > 1 {
            return Err(EditError::Ambiguous(count));
        }
        return Ok(content.replacen(search, &replacement, 1));
    }
    if caller_intent {
        return Err(EditError::NotFoundExactEndings);
    }

    // Pass 2: ignore trailing whitespace; pass 3: ignore surrounding whitespace.
    for eq in [trim_right_eq as LineEq, trim_all_eq] {
        if let Some(result) = replace_lines_fuzzy(
            &content_lines,
            &search_lines,
            replace,
            eq,
            replace_all,
            forced,
        ) {
            return result;
        }
    }
    Err(EditError::NotFound {
        hint: hint::for_miss(content, &content_lines, &search_lines, &replace_lines),
    })
}

/// Line equality for the fuzzy passes.
pub(crate) type LineEq = fn(&str, &str) -> bool;

/// Pass 2's rule: same ending class, same text once trailing spaces and tabs are dropped.
pub(crate) fn trim_right_eq(a: &str, b: &str) -> bool {
    let (ac, ae) = split_ending(a);
    let (bc, be) = split_ending(b);
    endings_match(ae, be) && ac.trim_end_matches([' ', '\t']) == bc.trim_end_matches([' ', '\t'])
}

/// Pass 3's rule: same ending class, same text once surrounding whitespace is dropped.
pub(crate) fn trim_all_eq(a: &str, b: &str) -> bool {
    let (ac, ae) = split_ending(a);
    let (bc, be) = split_ending(b);
    endings_match(ae, be) && ac.trim() == bc.trim()
}

/// Splits after every `\n`, like Go's `strings.SplitAfter(s, "\n")`: the last element is what
/// follows the last newline (`""` when `s` ends with one; `[""]` for an empty `s`).
pub(crate) fn split_after(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        if b == b'\n' {
            out.push(&s[start..=i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// [`split_after`] without the empty element a trailing newline leaves.
pub(crate) fn split_lines(s: &str) -> Vec<&str> {
    let mut v = split_after(s);
    if v.last() == Some(&"") {
        v.pop();
    }
    v
}

/// `(content, ending)` of one line from [`split_after`]; the ending is `\r\n`, `\n` or `""`.
pub(crate) fn split_ending(line: &str) -> (&str, &str) {
    if let Some(c) = line.strip_suffix("\r\n") {
        (c, "\r\n")
    } else if let Some(c) = line.strip_suffix('\n') {
        (c, "\n")
    } else {
        (line, "")
    }
}

pub(crate) fn is_newline(e: &str) -> bool {
    e == "\n" || e == "\r\n"
}

/// Matching-time ending rule: equal, both newlines, or either empty (end of file: a wildcard).
fn endings_match(a: &str, b: &str) -> bool {
    a.is_empty() || b.is_empty() || a == b || (is_newline(a) && is_newline(b))
}

/// Start of the first window of `content` matching `search` line by line.
fn seek(content: &[&str], search: &[&str], eq: LineEq, from: usize) -> Option<usize> {
    if search.len() > content.len() {
        return None;
    }
    (from..=content.len() - search.len()).find(|&i| {
        search
            .iter()
            .enumerate()
            .all(|(j, s)| eq(content[i + j], s))
    })
}

/// Starts of all non-overlapping matching windows, left to right.
fn all_matches(content: &[&str], search: &[&str], eq: LineEq) -> Vec<usize> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = seek(content, search, eq, from) {
        out.push(i);
        from = i + search.len();
    }
    out
}

/// Passes 2 and 3. `None` when nothing matches; an error when the match is ambiguous.
fn replace_lines_fuzzy(
    content: &[&str],
    search: &[&str],
    replace: &str,
    eq: LineEq,
    replace_all: bool,
    forced: Option<&'static str>,
) -> Option<Result<String, EditError>> {
    let matches = all_matches(content, search, eq);
    if matches.is_empty() {
        return None;
    }
    if !replace_all && matches.len() > 1 {
        return Some(Err(EditError::Ambiguous(matches.len())));
    }
    let mut out = String::new();
    let mut prev = 0;
    for start in matches {
        let end = start + search.len();
        out.extend(content[prev..start].iter().copied());
        out.push_str(&build_replacement(
            &content[start..end],
            search,
            replace,
            forced,
            at_no_newline_eof(content, end),
        ));
        prev = end;
    }
    out.extend(content[prev..].iter().copied());
    Some(Ok(out))
}

/// Whether a match ending at `end` covers the last line of a file that has no final newline.
fn at_no_newline_eof(content: &[&str], end: usize) -> bool {
    end > 0
        && content[end..].iter().all(|l| l.is_empty())
        && split_ending(content[end - 1]).1.is_empty()
}
