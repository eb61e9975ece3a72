//! Hints for a search that matched nowhere, so a model can fix its next try instead of
//! guessing: a search line that differs from a file line only in how often one character
//! repeats ("miscount"), or `search` and `replace` swapped ("inversion"). A miscount hint wins
//! when both could apply: a near-miss means the search is a typo'd copy of the file, and
//! following a swap hint would corrupt an unrelated line that happens to hold the replacement.

use std::collections::HashMap;

use super::{split_ending, trim_all_eq, trim_right_eq};

/// Line numbers (or candidates) listed before " and N more".
const MAX_LINES: usize = 5;
/// Miscount sentences listed before " and N more".
const MAX_MISCOUNTS: usize = 3;

/// The hint for a missed search, or `""`.
pub(super) fn for_miss(
    content: &str,
    content_lines: &[&str],
    search: &[&str],
    replace: &[&str],
) -> String {
    let m = miscount(content_lines, search);
    if !m.is_empty() {
        return m;
    }
    inversion(content, content_lines, replace)
}

fn inversion(content: &str, content_lines: &[&str], replace: &[&str]) -> String {
    if replace.is_empty() {
        return String::new();
    }
    let needle: String = replace.concat();
    let mut lines = substring_lines(content, &needle);
    if lines.is_empty() {
        lines = equivalent_lines(content_lines, replace, trim_right_eq);
    }
    if lines.is_empty() {
        lines = equivalent_lines(content_lines, replace, trim_all_eq);
    }
    if lines.is_empty() {
        return String::new();
    }
    format!(
        "Did you swap \"search\" and \"replace\"? Your replace string appears at line {}",
        line_list(&lines)
    )
}

/// 1-based lines where `needle` starts in `content`, overlapping occurrences included, each
/// line once.
fn substring_lines(content: &str, needle: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    if needle.is_empty() {
        return lines;
    }
    let (mut offset, mut line, mut counted) = (0, 1, 0);
    while let Some(rel) = content[offset..].find(needle) {
        let idx = offset + rel;
        line += content[counted..idx].matches('\n').count();
        counted = idx;
        if lines.last() != Some(&line) {
            lines.push(line);
        }
        // Advance one character so self-overlapping needles report every start.
        offset = idx + content[idx..].chars().next().map_or(1, char::len_utf8);
    }
    lines
}

/// 1-based start lines of every window of `content` that matches `needle` under `eq`.
fn equivalent_lines(content: &[&str], needle: &[&str], eq: fn(&str, &str) -> bool) -> Vec<usize> {
    if needle.is_empty() || needle.len() > content.len() {
        return Vec::new();
    }
    (0..=content.len() - needle.len())
        .filter(|&i| {
            needle
                .iter()
                .enumerate()
                .all(|(j, n)| eq(content[i + j], n))
        })
        .map(|i| i + 1)
        .collect()
}

/// "12, 47, 89", at most [`MAX_LINES`] then " and N more".
fn line_list(lines: &[usize]) -> String {
    let shown: Vec<String> = lines
        .iter()
        .take(MAX_LINES)
        .map(ToString::to_string)
        .collect();
    let mut s = shown.join(", ");
    if lines.len() > MAX_LINES {
        s.push_str(&format!(" and {} more", lines.len() - MAX_LINES));
    }
    s
}

/// One disagreeing character: its count in the search line, and `(line, count)` per file line.
type Miscount = (char, usize, Vec<(usize, usize)>);

fn miscount(content: &[&str], search: &[&str]) -> String {
    let mut hints: Vec<String> = Vec::new();
    let mut extra = 0;
    for s_line in search {
        let s = split_ending(s_line).0;
        if s.trim().is_empty() {
            continue;
        }
        // Group candidates by the disagreeing character, in order of first appearance.
        let mut groups: Vec<Miscount> = Vec::new();
        for (i, c_line) in content.iter().enumerate() {
            let Some((ch, s_count, c_count)) = single_char_miscount(s, split_ending(c_line).0)
            else {
                continue;
            };
            match groups.iter_mut().find(|g| g.0 == ch) {
                Some(g) => g.2.push((i + 1, c_count)),
                None => groups.push((ch, s_count, vec![(i + 1, c_count)])),
            }
        }
        for (ch, s_count, candidates) in groups {
            if hints.len() >= MAX_MISCOUNTS {
                extra += 1;
                continue;
            }
            let listed: Vec<String> = candidates
                .iter()
                .take(MAX_LINES)
                .map(|(line, n)| format!("{n} at line {line}"))
                .collect();
            let mut h = format!(
                "Your search has {s_count} {:?} (U+{:04X}); the file has {}",
                ch.to_string(),
                ch as u32,
                listed.join(", ")
            );
            if candidates.len() > MAX_LINES {
                h.push_str(&format!(" and {} more", candidates.len() - MAX_LINES));
            }
            hints.push(h);
        }
    }
    if extra > 0 {
        hints.push(format!("and {extra} more"));
    }
    hints.join(". ")
}

/// When `s` and `c` have the same count of every character but one, and that one appears at
/// least twice on one side: `(char, count in s, count in c)`.
fn single_char_miscount(s: &str, c: &str) -> Option<(char, usize, usize)> {
    if s.is_empty() || c.is_empty() {
        return None;
    }
    let freq = |t: &str| {
        let mut m: HashMap<char, usize> = HashMap::new();
        for ch in t.chars() {
            *m.entry(ch).or_default() += 1;
        }
        m
    };
    let (sf, cf) = (freq(s), freq(c));
    let mut diff = sf
        .iter()
        .filter(|(ch, n)| cf.get(ch).copied().unwrap_or(0) != **n)
        .map(|(ch, n)| (*ch, *n, cf.get(ch).copied().unwrap_or(0)))
        .chain(
            cf.iter()
                .filter(|(ch, _)| !sf.contains_key(ch))
                .map(|(ch, n)| (*ch, 0, *n)),
        );
    let first = diff.next()?;
    if diff.next().is_some() {
        return None;
    }
    let (_, sc, cc) = first;
    (sc >= 2 || cc >= 2).then_some(first)
}
