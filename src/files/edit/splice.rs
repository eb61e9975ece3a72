//! Writing a replacement over a fuzzy match (passes 2 and 3) so that the file keeps its style:
//! per-position substitution of leading whitespace, trailing whitespace and line ending, and
//! re-indentation of inserted lines from the caller's indent unit into the file's.

use std::borrow::Cow;

use super::{is_newline, split_ending, split_lines};

/// The line ending shared by every line but an unterminated last one; `None` when there are
/// fewer than two lines, an interior line has none, or they disagree.
pub(super) fn internal_ending(lines: &[&str]) -> Option<&'static str> {
    if lines.len() < 2 {
        return None;
    }
    let mut want: Option<&'static str> = None;
    for (i, l) in lines.iter().enumerate() {
        let e = match split_ending(l).1 {
            "\r\n" => "\r\n",
            "\n" => "\n",
            _ if i == lines.len() - 1 => continue,
            _ => return None,
        };
        match want {
            None => want = Some(e),
            Some(w) if w != e => return None,
            _ => {}
        }
    }
    want
}

/// `\r\n` when CRLF lines outnumber LF lines, else `\n` (ties and ending-less files too).
pub(super) fn dominant_ending(content: &[&str]) -> &'static str {
    let crlf = content.iter().filter(|l| l.ends_with("\r\n")).count();
    let lf = content
        .iter()
        .filter(|l| l.ends_with('\n') && !l.ends_with("\r\n"))
        .count();
    if crlf > lf { "\r\n" } else { "\n" }
}

/// `lines` joined with every interior ending replaced by `ending` (the last line keeps its own).
pub(super) fn rewrite_internal_ending(lines: &[&str], ending: &str) -> String {
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        let (body, e) = split_ending(l);
        out.push_str(body);
        if i == lines.len() - 1 || e.is_empty() {
            out.push_str(e);
        } else {
            out.push_str(ending);
        }
    }
    out
}

/// `(lead, middle, trail, ending)`: leading spaces/tabs, the body, trailing spaces/tabs, ending.
pub(super) fn parts(line: &str) -> (&str, &str, &str, &str) {
    let (body, ending) = split_ending(line);
    let rest = body.trim_start_matches([' ', '\t']);
    let lead = &body[..body.len() - rest.len()];
    let middle = rest.trim_end_matches([' ', '\t']);
    let trail = &rest[middle.len()..];
    (lead, middle, trail, ending)
}

fn lead(line: &str) -> &str {
    parts(line).0
}

/// Counts of leading and trailing lines on which `search` and `replace` agree (ignoring
/// surrounding whitespace, as pass 3 matches); the lines between are the rewritten middle.
fn align(search: &[&str], replace: &[&str]) -> (usize, usize) {
    let eq = |a: &str, b: &str| split_ending(a).0.trim() == split_ending(b).0.trim();
    let max = search.len().min(replace.len());
    let mut prefix = 0;
    while prefix < max && eq(search[prefix], replace[prefix]) {
        prefix += 1;
    }
    let mut suffix = 0;
    while suffix < max - prefix
        && eq(
            search[search.len() - 1 - suffix],
            replace[replace.len() - 1 - suffix],
        )
    {
        suffix += 1;
    }
    (prefix, suffix)
}

/// The smallest consistent indent unit of `lines`: a tab, or N spaces (N the GCD of the
/// indents seen). `None` without indented lines or when tabs and spaces mix. Lines without a
/// body carry no signal and are skipped.
pub(super) fn indent_unit(lines: &[&str]) -> Option<String> {
    let (mut tabs, mut spaces, mut gcd) = (false, false, 0usize);
    for l in lines {
        let (lead, middle, _, _) = parts(l);
        if lead.is_empty() || middle.is_empty() {
            continue;
        }
        if lead.starts_with('\t') && !lead.contains(' ') {
            tabs = true;
        } else if !lead.contains('\t') {
            spaces = true;
            gcd = if gcd == 0 {
                lead.len()
            } else {
                indent_gcd(gcd, lead.len())
            };
        } else {
            return None; // tabs and spaces within one indent
        }
    }
    match (tabs, spaces) {
        (true, true) => None,
        (true, false) => Some("\t".to_owned()),
        _ if gcd > 0 => Some(" ".repeat(gcd)),
        _ => None,
    }
}

pub(super) fn indent_gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// How many `unit`s make `lead`; `None` unless `lead` is exactly that many repetitions.
pub(super) fn indent_level(lead: &str, unit: &str) -> Option<usize> {
    if unit.is_empty() || !lead.len().is_multiple_of(unit.len()) {
        return None;
    }
    let n = lead.len() / unit.len();
    (unit.repeat(n) == lead).then_some(n)
}

/// The file-side indent for an inserted line: its depth relative to the reference search line,
/// in the caller's unit, applied to the file's indent at that line, in the file's unit.
pub(super) fn translate_indent(
    r_lead: &str,
    s_lead: &str,
    c_lead: &str,
    search_unit: &str,
    file_unit: &str,
) -> Option<String> {
    let rep = indent_level(r_lead, search_unit)? as isize;
    let base = indent_level(s_lead, search_unit)? as isize;
    let file = indent_level(c_lead, file_unit)? as isize;
    let target = file + rep - base;
    (target >= 0).then(|| file_unit.repeat(target as usize))
}

/// Splice rule at the ending position: same class (both empty, or both newlines).
fn ending_shape_equal(a: &str, b: &str) -> bool {
    a == b || (is_newline(a) && is_newline(b))
}

/// The text that replaces `matched` (content lines, as many as `search` has lines).
///
/// Each replacement line is paired with a reference search/content line: by index in the
/// agreeing prefix and suffix and in the rewritten middle, and for lines the replacement
/// inserts, with the scope (prefix or suffix) whose indent the caller gave them. Then, per
/// position: where search and replace agree, the file's bytes; where they disagree, the
/// replacement's. Carve-outs: a body-less replacement line keeps its own whitespace; interior
/// lines keep a newline even when the reference line is the file's unterminated last line;
/// `forced` (from ending normalisation) overrides endings; the match's last line keeps "no
/// newline at end of file" when `at_eof`, and otherwise always ends with a newline so the next
/// file line is never joined onto it.
pub(super) fn build_replacement(
    matched: &[&str],
    search: &[&str],
    replace: &str,
    forced: Option<&'static str>,
    at_eof: bool,
) -> String {
    let rep = split_lines(replace);
    let (prefix, suffix) = align(search, &rep);
    let mut unit_sample: Vec<&str> = search.to_vec();
    unit_sample.extend_from_slice(&rep);
    let search_unit = indent_unit(&unit_sample);
    let file_unit = indent_unit(matched);
    let middle_len = search.len() - prefix - suffix;
    let mut out = String::new();
    for (i, r_line) in rep.iter().enumerate() {
        let last = i == rep.len() - 1;
        let (ref_idx, inserted) = if i < prefix {
            (i, false)
        } else if i >= rep.len() - suffix {
            ((i + search.len()) - rep.len(), false)
        } else if i - prefix < middle_len {
            (i, false)
        } else {
            let r = lead(r_line);
            let idx = match (prefix > 0, suffix > 0) {
                (true, true) => {
                    if r == lead(rep[prefix - 1]) && r != lead(rep[rep.len() - suffix]) {
                        prefix - 1
                    } else {
                        search.len() - suffix
                    }
                }
                (false, true) => search.len() - suffix,
                (true, false) => prefix - 1,
                (false, false) => i.min(search.len() - 1),
            };
            (idx, true)
        };
        let (s_lead, _, s_trail, s_end) = parts(search[ref_idx]);
        let (r_lead, r_mid, r_trail, r_end) = parts(r_line);
        let (c_lead, _, c_trail, c_end) = parts(matched[ref_idx]);

        let mut lead_out: Cow<'_, str> = Cow::Borrowed(r_lead);
        let mut trail_out = r_trail;
        if r_mid.is_empty() {
            // Body-less: the replacement's own whitespace, nothing inherited.
        } else if inserted {
            lead_out = Cow::Borrowed(c_lead);
            if let (Some(su), Some(fu)) = (&search_unit, &file_unit)
                && let Some(t) = translate_indent(r_lead, s_lead, c_lead, su, fu)
            {
                lead_out = Cow::Owned(t);
            }
        } else {
            if s_lead == r_lead {
                lead_out = Cow::Borrowed(c_lead);
            }
            if s_trail == r_trail {
                trail_out = c_trail;
            }
        }

        let mut ending = r_end;
        if !inserted && ending_shape_equal(s_end, r_end) {
            ending = if c_end.is_empty() && !last {
                r_end
            } else {
                c_end
            };
        }
        if inserted && last && at_eof {
            ending = "";
        }
        if let Some(f) = forced
            && (!last || !at_eof)
        {
            ending = f;
        }
        if last && !at_eof && ending.is_empty() {
            ending = forced.unwrap_or("\n");
        }
        out.push_str(&lead_out);
        out.push_str(r_mid);
        out.push_str(trail_out);
        out.push_str(ending);
    }
    out
}
