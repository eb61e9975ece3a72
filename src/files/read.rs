//! Reads: a byte range to stream (`read-file`) and a page of numbered lines (`read-file-lines`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::lines::{self, LineLimits, LineRange, Page};
use super::{ContentHash, Files, FilesError, hash::Hasher, path};

/// An open file positioned at the requested offset, with what the response headers need.
#[derive(Debug)]
pub struct ReadFile {
    /// The open file, positioned at the requested offset; read at most `len` bytes from it.
    pub file: File,
    /// The path read (absolute, cleaned; symbolic links not resolved).
    pub path: PathBuf,
    /// The whole file's size.
    pub size: u64,
    /// Bytes to stream from the current position.
    pub len: u64,
    /// The whole file's content hash; `None` for files over `max_write_bytes` (hashing them on
    /// every read would cost a full read; such files cannot be written through the API anyway).
    pub hash: Option<ContentHash>,
    /// From the file name's extension; `application/octet-stream` when unknown.
    pub content_type: String,
}

/// A page of lines and what it was cut from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinesRead {
    /// The lines asked for.
    pub page: Page,
    /// The whole file's size in bytes.
    pub file_size: u64,
    /// The whole file's content hash (what a later write or edit can require).
    pub hash: ContentHash,
}

impl Files {
    /// Opens `raw` for a streamed read of `limit` bytes (0: to the end) from `offset`.
    pub async fn open_read(
        &self,
        raw: &str,
        offset: u64,
        limit: u64,
    ) -> Result<ReadFile, FilesError> {
        let p = path::absolute(raw)?;
        self.run(move |inner| {
            let (mut file, size) = open_regular(&p)?;
            let limit = if limit == 0 { size } else { limit };
            let len = size.saturating_sub(offset).min(limit);
            let hash = if size <= inner.limits.max_write_bytes {
                Some(hash_file(&file, &p)?)
            } else {
                None
            };
            file.seek(SeekFrom::Start(offset.min(size)))
                .map_err(|e| FilesError::io("seek", &p, e))?;
            let content_type = mime_guess::from_path(&p)
                .first_raw()
                .unwrap_or("application/octet-stream")
                .to_owned();
            Ok(ReadFile {
                file,
                path: p,
                size,
                len,
                hash,
                content_type,
            })
        })
        .await
    }

    /// A page of numbered lines of `raw`. `limits.max_file_size` is capped at `max_write_bytes`.
    pub async fn read_lines(
        &self,
        raw: &str,
        range: LineRange,
        mut limits: LineLimits,
    ) -> Result<LinesRead, FilesError> {
        let p = path::absolute(raw)?;
        limits.max_file_size = limits.max_file_size.min(self.limits().max_write_bytes);
        self.run(move |_| {
            let (file, size) = open_regular(&p)?;
            if size > limits.max_file_size {
                return Err(FilesError::Invalid(lines::too_large(
                    size,
                    limits.max_file_size,
                )));
            }
            // Bounded even for files that grow or lie about their size (/proc).
            let mut data = Vec::with_capacity(size as usize);
            file.take(limits.max_file_size + 1)
                .read_to_end(&mut data)
                .map_err(|e| FilesError::io("read", &p, e))?;
            if data.len() as u64 > limits.max_file_size {
                return Err(FilesError::Invalid(lines::too_large(
                    data.len() as u64,
                    limits.max_file_size,
                )));
            }
            let page = lines::page(&data, range, limits).map_err(FilesError::Invalid)?;
            Ok(LinesRead {
                page,
                file_size: data.len() as u64,
                hash: ContentHash::of(&data),
            })
        })
        .await
    }
}

/// Opens a file for reading; directories are refused.
pub(super) fn open_regular(p: &Path) -> Result<(File, u64), FilesError> {
    let file = File::open(p).map_err(|e| FilesError::io("open", p, e))?;
    let meta = file.metadata().map_err(|e| FilesError::io("stat", p, e))?;
    if meta.is_dir() {
        return Err(FilesError::NotAFile(p.to_owned()));
    }
    Ok((file, meta.len()))
}

/// The content hash of an open file, read with positioned reads (the file offset is untouched).
pub(super) fn hash_file(file: &File, p: &Path) -> Result<ContentHash, FilesError> {
    let mut h = Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = 0u64;
    loop {
        let n = file
            .read_at(&mut buf, at)
            .map_err(|e| FilesError::io("read", p, e))?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
        at += n as u64;
    }
}
