//! Wire types of the workspace file routes, shared by the server (`api::files`) and the SDK
//! (`client`). Names, shapes and omission rules are the reference agent's (Coder's
//! `codersdk/workspacesdk` `LSRequest`, `ReadFileLinesResponse`, `FileEditRequest`, …: Go's
//! `omitempty` becomes `skip_serializing_if`, Go's `null` slices decode as empty); fields marked
//! **ext** are ours and optional on decode, so Coder agents' answers still parse.

use serde::{Deserialize, Deserializer, Serialize};

/// Go encodes a nil slice as `null`: decode it as empty.
fn null_as_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `POST /api/v0/list-directory` body (used when the `?path=` query is absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LsRequest {
    /// Components under the base, e.g. `["repos", "coder"]`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub path: Vec<String>,
    /// Where `path` starts.
    #[serde(default)]
    pub relativity: LsRelativity,
}

/// The base of [`LsRequest::path`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LsRelativity {
    /// Go's zero value; valid only with a `?path=` query.
    #[default]
    #[serde(rename = "")]
    Unspecified,
    /// `/`.
    Root,
    /// The home directory of the user the request runs as.
    Home,
}

/// `list-directory` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LsResponse {
    /// The listed directory's components.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub absolute_path: Vec<String>,
    /// The listed directory as one absolute path.
    pub absolute_path_string: String,
    /// Directories first, then files, each by name.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub contents: Vec<LsFile>,
    /// **ext**: entries in the directory; more than `contents` when the listing was cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_entries: Option<u64>,
    /// **ext**: true when only the first 10,000 entries are listed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
}

/// One entry of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LsFile {
    /// The file name.
    pub name: String,
    /// The entry's absolute path (the directory joined with `name`).
    pub absolute_path_string: String,
    /// From `lstat`: a symbolic link to a directory is not a directory here.
    pub is_dir: bool,
    /// **ext**
    #[serde(default, skip_serializing_if = "is_false")]
    pub is_symlink: bool,
    /// **ext**: bytes (of the link itself for a symbolic link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// **ext**: permission bits in octal, e.g. `"0644"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// **ext**: modification time, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_unix: Option<i64>,
}

/// `GET /api/v0/resolve-path` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvePathResponse {
    /// The absolute path with symbolic links resolved in the part that exists.
    pub resolved_path: String,
}

/// `GET /api/v0/read-file-lines` answer. Failures are `200` with `success: false` and `error`,
/// as the reference answers (only malformed queries are `400`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadFileLinesResponse {
    /// False when the read failed; `error` says why.
    pub success: bool,
    /// The whole file's size in bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub file_size: u64,
    /// Lines in the whole file.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub total_lines: u64,
    /// Lines in `content`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lines_read: u64,
    /// `"<n>\t<line>"` joined with `\n`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub content: String,
    /// Why the read failed (too large, not found, a page over the limits, ...); empty on
    /// success.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// **ext**: the whole file's content hash (also the `ETag` header); pass it as `if_match`
    /// to an edit or `If-Match` to a write to make sure nobody changed the file meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// **ext**: the `offset` of the next page, when lines remain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u64>,
}

/// The limits the reference SDK sends with every line read (query parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadFileLinesLimits {
    /// Largest file to read, bytes (the agent also caps it at its `max_write_bytes`).
    pub max_file_size: u64,
    /// Longer lines are cut to this many bytes.
    pub max_line_bytes: u64,
    /// Most lines in one answer.
    pub max_response_lines: u64,
    /// Most bytes of `content` in one answer.
    pub max_response_bytes: u64,
}

impl Default for ReadFileLinesLimits {
    /// The reference's defaults: 1 MiB files, 1024-byte lines, 2000 lines, 32 KiB per page.
    fn default() -> Self {
        let d = crate::files::lines::LineLimits::default();
        Self {
            max_file_size: d.max_file_size,
            max_line_bytes: d.max_line_bytes as u64,
            max_response_lines: d.max_response_lines as u64,
            max_response_bytes: d.max_response_bytes as u64,
        }
    }
}

/// `POST /api/v0/write-file` answer: the reference's `{message}` plus **ext** fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteFileResponse {
    /// A sentence saying what was written where.
    pub message: String,
    /// **ext**: the new content's hash (also the `ETag` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    /// **ext**: bytes written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// One search/replace edit (matching rules: `files::edit`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEdit {
    /// The text to find; must match exactly one place unless `replace_all`.
    #[serde(default)]
    pub search: String,
    /// What to put in its place.
    #[serde(default)]
    pub replace: String,
    /// Replace every match.
    #[serde(default, skip_serializing_if = "is_false")]
    pub replace_all: bool,
}

/// One file's edits in an `edit-files` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEdits {
    /// The file, absolute.
    #[serde(default)]
    pub path: String,
    /// Applied in order, each to the result of the previous one.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub edits: Vec<FileEdit>,
    /// **ext**: the content hash the file must still have (from a read); 412 otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_match: Option<String>,
}

/// `POST /api/v0/edit-files` body. All files are edited, or none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEditRequest {
    /// The files to edit; at most `[files] max_edit_files`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub files: Vec<FileEdits>,
    /// Ask for a unified diff (and, **ext**, the new hash) per file.
    #[serde(default, skip_serializing_if = "is_false")]
    pub include_diff: bool,
}

/// `POST /api/v0/edit-files` answer: `files` only when `include_diff` was set, one entry per
/// edited file in request order, under the path the caller gave.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEditResponse {
    /// Per-file results; absent without `include_diff`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileEditResult>>,
}

/// One edited file's result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEditResult {
    /// The path as the request gave it.
    pub path: String,
    /// Empty when the edits changed nothing.
    #[serde(default)]
    pub diff: String,
    /// **ext**: the file's content hash after the edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
}

/// Error body of the file routes: the API's `{message, detail?}` plus, on 412, **ext** `path`
/// and `current_hash` (absent when the file does not exist).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileErrorResponse {
    /// What went wrong, for a human or a model.
    pub message: String,
    /// The underlying cause, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// **ext**, on 412: the file whose hash did not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// **ext**, on 412: its current content hash; absent when the file does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_hash: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_the_reference_sdk_sends() {
        // Go's zero values: null slices, empty relativity.
        let r: LsRequest = serde_json::from_str(r#"{"path":null,"relativity":""}"#).unwrap();
        assert_eq!(r, LsRequest::default());
        let r: LsRequest = serde_json::from_str(r#"{"path":["a"],"relativity":"home"}"#).unwrap();
        assert_eq!(r.relativity, LsRelativity::Home);
        let e: FileEditRequest =
            serde_json::from_str(r#"{"files":[{"path":"/a","edits":null}]}"#).unwrap();
        assert!(e.files[0].edits.is_empty() && !e.include_diff);
        // A failed line read omits every zero field, as Go's omitempty does.
        let v = serde_json::to_value(ReadFileLinesResponse {
            error: "x".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(v, serde_json::json!({"success": false, "error": "x"}));
        assert_eq!(
            serde_json::to_value(FileEditResponse::default()).unwrap(),
            serde_json::json!({})
        );
    }
}
