//! Unified diffs of an edit (`include_diff`), via `similar`. Bounded in time: a pathological
//! pair falls back to a coarser (still correct) diff after the deadline.

use std::time::Duration;

use similar::TextDiff;

/// Longest time spent searching for a minimal diff.
const DIFF_TIMEOUT: Duration = Duration::from_millis(500);

/// `--- path` / `+++ path` and hunks with 3 lines of context; `""` when nothing changed.
pub fn unified(path: &str, old: &str, new: &str) -> String {
    TextDiff::configure()
        .timeout(DIFF_TIMEOUT)
        .diff_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(path, path)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_name_the_path_and_show_the_change() {
        let d = unified("/w/a.txt", "hello world\n", "HELLO world\n");
        assert!(d.starts_with("--- /w/a.txt\n+++ /w/a.txt\n@@ "), "{d}");
        assert!(d.contains("\n-hello world\n+HELLO world\n"), "{d}");
        assert_eq!(unified("/w/a.txt", "same\n", "same\n"), "");
    }
}
