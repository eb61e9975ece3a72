//! A page of a text file as numbered lines (`read-file-lines`, the `read_file` tool), with the
//! reference agent's safety limits. Sans-IO: the caller reads the bytes (after checking the
//! file size against [`LineLimits::max_file_size`]).

/// Bounds of one page. The defaults are the reference agent's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineLimits {
    /// Larger files are refused (they are read whole).
    pub max_file_size: u64,
    /// Longer lines are cut and marked `... [truncated]`.
    pub max_line_bytes: usize,
    /// Lines per page.
    pub max_response_lines: usize,
    /// Bytes of numbered text per page.
    pub max_response_bytes: usize,
}

impl Default for LineLimits {
    /// 1 MiB files, 1024-byte lines, 2000 lines and 32 KiB per page.
    fn default() -> Self {
        Self {
            max_file_size: 1 << 20,
            max_line_bytes: 1024,
            max_response_lines: 2000,
            max_response_bytes: 32768,
        }
    }
}

/// Which lines to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LineRange {
    /// First line, 1-based; 0 means 1.
    pub offset: u64,
    /// Lines wanted; 0 means `max_response_lines`.
    pub limit: u64,
    /// When the page would exceed a limit, return the lines that fit (and where to continue)
    /// instead of failing as the reference does.
    pub partial: bool,
}

/// A page of numbered lines: `"<n>\t<line>"` joined with `\n`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Page {
    /// Lines in the whole file (a final line without `\n` counts).
    pub total_lines: u64,
    /// Lines in this page.
    pub lines_read: u64,
    /// The numbered lines, each cut at the configured line length.
    pub content: String,
    /// The line to ask for next, when lines remain after this page.
    pub next_offset: Option<u64>,
}

/// The reason a page could not be produced, phrased for a model.
pub type PageError = String;

/// The message for a file over [`LineLimits::max_file_size`].
pub fn too_large(size: u64, limit: u64) -> PageError {
    format!(
        "file is {size} bytes which exceeds the maximum of {limit} bytes. Use grep, sed, or awk \
         to extract the content you need, or use offset and limit to read a portion."
    )
}

/// Lines are split at `\n` (a `\r` before it stays part of the line); a final newline does not
/// start another line. Invalid UTF-8 becomes U+FFFD; a file with NUL bytes in its first 8 KiB is
/// refused as binary.
pub fn page(data: &[u8], range: LineRange, limits: LineLimits) -> Result<Page, PageError> {
    if data.is_empty() {
        return Ok(Page::default());
    }
    if data[..data.len().min(8192)].contains(&0) {
        return Err(
            "file appears to be binary (it contains NUL bytes); read it with read-file \
             (raw bytes) instead"
                .to_owned(),
        );
    }
    let text = String::from_utf8_lossy(data);
    let body = text.strip_suffix('\n').unwrap_or(&text);
    let total = body.split('\n').count() as u64;
    let offset = range.offset.max(1);
    if offset > total {
        return Err(format!(
            "offset {offset} is beyond the file length of {total} lines"
        ));
    }
    let limit = if range.limit == 0 {
        limits.max_response_lines as u64
    } else {
        range.limit
    };
    let mut content = String::new();
    let mut read = 0u64;
    let mut next = None;
    let wanted = body
        .split('\n')
        .enumerate()
        .skip((offset - 1) as usize)
        .take(usize::try_from(limit).unwrap_or(usize::MAX));
    for (i, line) in wanted {
        let numbered = format!("{}\t{}", i + 1, cap_line(line, limits.max_line_bytes));
        let joiner = usize::from(read > 0);
        let over_bytes = content.len() + joiner + numbered.len() > limits.max_response_bytes;
        let over_lines = read as usize >= limits.max_response_lines;
        if over_bytes || over_lines {
            if range.partial && read > 0 {
                next = Some(i as u64 + 1);
                break;
            }
            return Err(if over_bytes {
                format!(
                    "output would exceed {} bytes. Read less at a time using offset and limit \
                     parameters.",
                    limits.max_response_bytes
                )
            } else {
                format!(
                    "output would exceed {} lines. Read less at a time using offset and limit \
                     parameters.",
                    limits.max_response_lines
                )
            });
        }
        if joiner == 1 {
            content.push('\n');
        }
        content.push_str(&numbered);
        read += 1;
    }
    let last = offset - 1 + read;
    if next.is_none() && last < total {
        next = Some(last + 1);
    }
    Ok(Page {
        total_lines: total,
        lines_read: read,
        content,
        next_offset: next,
    })
}

/// `line` cut to `max` bytes (on a character boundary) plus a marker, or as is.
fn cap_line(line: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if line.len() <= max {
        return line.into();
    }
    let mut cut = max;
    while !line.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}... [truncated]", &line[..cut]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(data: &str, offset: u64, limit: u64) -> Result<Page, PageError> {
        page(
            data.as_bytes(),
            LineRange {
                offset,
                limit,
                partial: false,
            },
            LineLimits::default(),
        )
    }

    #[test]
    fn reference_cases() {
        let basic = "line1\nline2\nline3";
        assert_eq!(p("", 0, 0).unwrap(), Page::default());
        let all = p(basic, 0, 0).unwrap();
        assert_eq!(all.content, "1\tline1\n2\tline2\n3\tline3");
        assert_eq!(
            (all.total_lines, all.lines_read, all.next_offset),
            (3, 3, None)
        );
        assert_eq!(p(basic, 2, 0).unwrap().content, "2\tline2\n3\tline3");
        let one = p(basic, 0, 1).unwrap();
        assert_eq!(
            (one.content.as_str(), one.lines_read, one.next_offset),
            ("1\tline1", 1, Some(2))
        );
        assert_eq!(p(basic, 2, 1).unwrap().content, "2\tline2");
        assert_eq!(
            p(basic, 100, 0).unwrap_err(),
            "offset 100 is beyond the file length of 3 lines"
        );
        let long = "x".repeat(1025);
        let capped = p(&long, 0, 0).unwrap();
        assert_eq!(
            capped.content,
            format!("1\t{}... [truncated]", "x".repeat(1024))
        );
        assert!(too_large(1 << 21, 1 << 20).contains("exceeds the maximum"));
    }

    #[test]
    fn a_final_newline_is_not_a_line_and_crlf_stays() {
        let page = p("a\r\nb\r\n", 0, 0).unwrap();
        assert_eq!(
            (page.total_lines, page.content.as_str()),
            (2, "1\ta\r\n2\tb\r")
        );
        assert_eq!(p("\n", 0, 0).unwrap().content, "1\t");
        assert_eq!(p("a\n\n", 0, 0).unwrap().total_lines, 2);
    }

    #[test]
    fn over_budget_fails_or_returns_what_fits() {
        let many: String = (0..3000).map(|i| format!("line {i:>20}\n")).collect();
        let err = p(&many, 0, 0).map(|p| p.lines_read).unwrap_err();
        assert!(err.contains("output would exceed 32768 bytes"), "{err}");
        let limits = LineLimits {
            max_response_bytes: 1 << 20,
            ..Default::default()
        };
        let range = LineRange {
            offset: 1,
            limit: 2500,
            partial: false,
        };
        let err = page(many.as_bytes(), range, limits)
            .map(|p| p.lines_read)
            .unwrap_err();
        assert!(err.contains("2000 lines"), "{err}");
        let partial = page(
            many.as_bytes(),
            LineRange {
                partial: true,
                ..range
            },
            LineLimits::default(),
        )
        .unwrap();
        assert!(partial.content.len() <= 32768 && partial.lines_read > 100);
        assert_eq!(partial.next_offset, Some(partial.lines_read + 1));
        assert!(
            partial
                .content
                .ends_with(&format!("line {:>20}", partial.lines_read - 1))
        );
    }

    #[test]
    fn binary_and_invalid_utf8() {
        assert!(
            page(b"ab\0cd", LineRange::default(), LineLimits::default())
                .unwrap_err()
                .contains("binary")
        );
        let p = page(b"caf\xe9\n", LineRange::default(), LineLimits::default()).unwrap();
        assert_eq!(p.content, "1\tcaf\u{fffd}");
        // A cut never splits a character.
        let l = LineLimits {
            max_line_bytes: 2,
            ..Default::default()
        };
        let p = page("é".as_bytes(), LineRange::default(), l).unwrap();
        assert_eq!(p.content, "1\té");
        let p = page("aé".as_bytes(), LineRange::default(), l).unwrap();
        assert_eq!(p.content, "1\ta... [truncated]");
    }
}
