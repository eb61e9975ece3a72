//! File verbs: `cat` (stream a file to stdout), `put` (stream stdin into a file, atomically),
//! `ls` (list a directory); each with `--json` for scripts.

use anyhow::{Context, bail};
use tokio::io::AsyncWriteExt;

use super::control::Session;
use super::json;
use crate::api::file_types::{LsFile, LsRequest};
use crate::client::WriteCondition;

/// The most `cat --json` holds in memory to put into its one object.
const JSON_MAX_BYTES: u64 = 16 << 20;

/// `wgagent cat AGENT PATH`: the file's bytes on stdout, as they arrive; with `--json`, one
/// object with the bytes (at most [`JSON_MAX_BYTES`]) and the file's size and hash.
pub async fn cat(
    s: &Session,
    path: &str,
    offset: u64,
    limit: u64,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut download = s
        .conn
        .read_file(path, offset, limit)
        .await
        .map_err(|e| s.explain(e))?;
    if as_json {
        if download.len.is_some_and(|n| n > JSON_MAX_BYTES) {
            bail!(
                "{path}: {} bytes are more than --json holds ({JSON_MAX_BYTES}); use --limit, or \
                 cat without --json",
                download.len.unwrap_or_default()
            );
        }
        let (content_type, hash, file_size) = (
            download.content_type.clone(),
            download.hash.clone(),
            download.file_size,
        );
        let bytes = download
            .bytes(JSON_MAX_BYTES as usize)
            .await
            .map_err(|e| s.explain(e))?;
        let size = bytes.len() as u64;
        let (content, content_base64) = match String::from_utf8(bytes) {
            Ok(text) => (Some(text), None),
            Err(e) => {
                use base64::Engine as _;
                let b64 = base64::engine::general_purpose::STANDARD.encode(e.as_bytes());
                (None, Some(b64))
            }
        };
        return json::print(&json::File {
            path: path.to_owned(),
            offset,
            size,
            file_size,
            hash,
            content_type,
            content,
            content_base64,
        });
    }
    let mut out = tokio::io::stdout();
    while let Some(chunk) = download.chunk().await {
        let chunk = chunk.map_err(|e| s.explain(e))?;
        match out.write_all(&chunk).await {
            // A closed pipe (`| head`) is a normal end.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            r => r.context("writing to stdout")?,
        }
    }
    out.flush().await.ok();
    Ok(())
}

/// `wgagent put AGENT PATH < FILE`: stdin streamed into the file, replaced atomically.
pub async fn put(
    s: &Session,
    path: &str,
    if_match: Option<&str>,
    create: bool,
    json: bool,
) -> anyhow::Result<()> {
    let cond = match (if_match, create) {
        (Some(_), true) => bail!("--if-match and --create exclude each other"),
        (Some(h), false) => WriteCondition::IfMatch(h),
        (None, true) => WriteCondition::IfAbsent,
        (None, false) => WriteCondition::Always,
    };
    let stdin = tokio_util::io::ReaderStream::with_capacity(tokio::io::stdin(), 256 * 1024);
    let r = s
        .conn
        .write_file_stream(path, stdin, cond)
        .await
        .map_err(|e| s.explain(e))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    }
    Ok(())
}

/// `wgagent ls AGENT PATH`: a table (type and mode, size, modification time, name).
pub async fn ls(s: &Session, path: &str, json: bool) -> anyhow::Result<()> {
    let r = s
        .conn
        .list_directory(Some(path), &LsRequest::default())
        .await
        .map_err(|e| s.explain(e))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    for f in &r.contents {
        println!("{}", row(f));
    }
    if r.truncated {
        eprintln!(
            "wgagent: only the first {} of {} entries are listed",
            r.contents.len(),
            r.total_entries.unwrap_or_default()
        );
    }
    Ok(())
}

fn row(f: &LsFile) -> String {
    let kind = if f.is_dir {
        'd'
    } else if f.is_symlink {
        'l'
    } else {
        '-'
    };
    let mode = f
        .mode
        .as_deref()
        .and_then(|m| u32::from_str_radix(m, 8).ok())
        .map_or_else(|| "?????????".to_owned(), rwx);
    let size = f.size.map_or_else(|| "-".to_owned(), |s| s.to_string());
    let when = f.modified_unix.map_or_else(|| "-".to_owned(), date);
    let name = if f.is_dir {
        format!("{}/", f.name)
    } else {
        f.name.clone()
    };
    format!("{kind}{mode} {size:>12} {when} {name}")
}

/// `rwxr-xr-x` from permission bits.
fn rwx(mode: u32) -> String {
    (0..9)
        .map(|i| {
            let bit = 1 << (8 - i);
            if mode & bit == 0 {
                '-'
            } else {
                ['r', 'w', 'x'][i % 3]
            }
        })
        .collect()
}

/// `YYYY-MM-DD HH:MM` (UTC) from seconds since the epoch.
fn date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_like_ls_l() {
        assert_eq!(rwx(0o755), "rwxr-xr-x");
        assert_eq!(rwx(0o640), "rw-r-----");
        assert_eq!(date(0), "1970-01-01 00:00");
        assert_eq!(date(1_700_000_000), "2023-11-14 22:13");
        let f = LsFile {
            name: "src".into(),
            is_dir: true,
            size: Some(4096),
            mode: Some("0755".into()),
            modified_unix: Some(0),
            ..LsFile::default()
        };
        assert_eq!(row(&f), "drwxr-xr-x         4096 1970-01-01 00:00 src/");
    }
}
