//! The file tools' semantics: arguments from the model → SDK calls → the JSON the model reads.
//! Every answer has `success`; failures carry `error` (with the agent's hint for a failed
//! search). Answers stay under the tools' 32 KiB output cap.

use std::time::Instant;

use serde_json::{Map, Value, json};

use super::ToolReply;
use super::args::{optional_bool, optional_str, required_str};
use super::file_schema::{EDIT_FILES, LIST_DIRECTORY, READ_FILE, WRITE_FILE};
use super::rules::MAX_OUTPUT_BYTES;
use crate::api::file_types::{
    FileEdit, FileEditRequest, FileEdits, LsRequest, ReadFileLinesLimits,
};
use crate::client::{AgentConn, ClientError, Connect, WriteCondition};

/// Runs file tool `name` (one of `file_schema::NAMES`) with the model's arguments.
pub async fn call<C: Connect>(
    conn: &AgentConn<C>,
    name: &str,
    obj: &Map<String, Value>,
) -> ToolReply {
    let t0 = Instant::now();
    let result = match name {
        READ_FILE => read_file(conn, obj).await,
        WRITE_FILE => write_file(conn, obj).await,
        EDIT_FILES => edit_files(conn, obj).await,
        LIST_DIRECTORY => list_directory(conn, obj).await,
        _ => Err(Fail::Args(format!("unknown file tool {name:?}"))),
    };
    let ms = t0.elapsed().as_millis() as u64;
    match result {
        Ok(mut v) => {
            v["success"] = json!(true);
            v["wall_duration_ms"] = json!(ms);
            ToolReply {
                value: reorder(v),
                is_error: false,
            }
        }
        Err(Fail::Args(e)) => ToolReply {
            value: json!({"success": false, "error": e, "wall_duration_ms": ms}),
            is_error: true,
        },
        Err(Fail::Agent(e)) => ToolReply {
            value: json!({"success": false, "error": e, "wall_duration_ms": ms}),
            is_error: false,
        },
    }
}

/// Why a call failed: the model's arguments (MCP `isError`), or the operation itself.
enum Fail {
    Args(String),
    Agent(String),
}

impl From<ClientError> for Fail {
    fn from(e: ClientError) -> Self {
        Fail::Agent(match e {
            ClientError::Status {
                message, detail, ..
            } => match detail {
                Some(d) => format!("{message} ({d})"),
                None => message,
            },
            other => other.to_string(),
        })
    }
}

/// `success` first, for a model reading left to right.
fn reorder(v: Value) -> Value {
    let Value::Object(m) = v else { return v };
    let mut out = Map::new();
    if let Some(s) = m.get("success") {
        out.insert("success".to_owned(), s.clone());
    }
    for (k, v) in m {
        if k != "success" {
            out.insert(k, v);
        }
    }
    Value::Object(out)
}

fn path_arg(obj: &Map<String, Value>) -> Result<String, Fail> {
    let p = required_str(obj, "path").map_err(Fail::Args)?;
    if !p.starts_with('/') {
        return Err(Fail::Args(format!(
            "path must be absolute (start with /), not {p:?}"
        )));
    }
    Ok(p)
}

fn count_arg(obj: &Map<String, Value>, key: &str) -> Result<u64, Fail> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64().unwrap_or(0)),
        Some(Value::String(s)) if s.trim().parse::<u64>().is_ok() => {
            Ok(s.trim().parse().unwrap_or(0))
        }
        Some(other) => Err(Fail::Args(format!(
            "{key} must be a positive whole number, not {other}"
        ))),
    }
}

async fn read_file<C: Connect>(
    conn: &AgentConn<C>,
    obj: &Map<String, Value>,
) -> Result<Value, Fail> {
    let path = path_arg(obj)?;
    let offset = count_arg(obj, "offset")?.max(1);
    let limit = count_arg(obj, "limit")?;
    let r = conn
        .read_file_lines(&path, offset, limit, &ReadFileLinesLimits::default(), true)
        .await?;
    if !r.success {
        return Err(Fail::Agent(r.error));
    }
    let mut v = json!({
        "path": path,
        "content": r.content,
        "file_size": r.file_size,
        "total_lines": r.total_lines,
        "lines_read": r.lines_read,
        "hash": r.hash,
    });
    if let Some(next) = r.next_offset {
        v["next_offset"] = json!(next);
        v["note"] = json!(format!(
            "Showing lines {offset}-{} of {}. To read on, call read_file with offset {next}.",
            offset + r.lines_read.saturating_sub(1),
            r.total_lines
        ));
    }
    Ok(v)
}

async fn write_file<C: Connect>(
    conn: &AgentConn<C>,
    obj: &Map<String, Value>,
) -> Result<Value, Fail> {
    let path = path_arg(obj)?;
    let content = match obj.get("content") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => return Err(Fail::Args("content is required".to_owned())),
        Some(other) => {
            return Err(Fail::Args(format!("content must be a string, not {other}")));
        }
    };
    let if_match = optional_str(obj, "if_match")
        .map_err(Fail::Args)?
        .filter(|s| !s.trim().is_empty());
    let cond = if_match
        .as_deref()
        .map_or(WriteCondition::Always, WriteCondition::IfMatch);
    let r = conn.write_file(&path, content.into_bytes(), cond).await?;
    Ok(json!({"path": path, "bytes": r.bytes, "hash": r.hash}))
}

fn edits_arg(obj: &Map<String, Value>) -> Result<Vec<FileEdits>, Fail> {
    let Some(Value::Array(files)) = obj.get("files") else {
        return Err(Fail::Args(
            "files is required: a list of {path, edits: [{search, replace}]}".to_owned(),
        ));
    };
    if files.is_empty() {
        return Err(Fail::Args("files must list at least one file".to_owned()));
    }
    let mut out = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let Value::Object(f) = f else {
            return Err(Fail::Args(format!(
                "files[{i}] must be an object {{path, edits}}"
            )));
        };
        let path = path_arg(f).map_err(|e| match e {
            Fail::Args(m) => Fail::Args(format!("files[{i}]: {m}")),
            other => other,
        })?;
        let Some(Value::Array(edits)) = f.get("edits") else {
            return Err(Fail::Args(format!(
                "files[{i}].edits is required: a list of {{search, replace}}"
            )));
        };
        let mut list = Vec::new();
        for (j, e) in edits.iter().enumerate() {
            let Value::Object(e) = e else {
                return Err(Fail::Args(format!(
                    "files[{i}].edits[{j}] must be an object"
                )));
            };
            // `old_text`/`new_text` are accepted too (the reference's newer names).
            let text = |a: &str, b: &str| -> Result<Option<String>, Fail> {
                let x = optional_str(e, a).map_err(Fail::Args)?;
                Ok(match x {
                    Some(x) => Some(x),
                    None => optional_str(e, b).map_err(Fail::Args)?,
                })
            };
            let search = text("search", "old_text")?
                .ok_or_else(|| Fail::Args(format!("files[{i}].edits[{j}].search is required")))?;
            let replace = text("replace", "new_text")?
                .ok_or_else(|| Fail::Args(format!("files[{i}].edits[{j}].replace is required")))?;
            list.push(FileEdit {
                search,
                replace,
                replace_all: optional_bool(e, "replace_all")
                    .map_err(Fail::Args)?
                    .unwrap_or(false),
            });
        }
        out.push(FileEdits {
            path,
            edits: list,
            if_match: optional_str(f, "if_match")
                .map_err(Fail::Args)?
                .filter(|s| !s.trim().is_empty()),
        });
    }
    Ok(out)
}

async fn edit_files<C: Connect>(
    conn: &AgentConn<C>,
    obj: &Map<String, Value>,
) -> Result<Value, Fail> {
    let files = edits_arg(obj)?;
    let r = conn
        .edit_files(&FileEditRequest {
            files,
            include_diff: true,
        })
        .await?;
    // Diffs share the output cap; the ones that do not fit are summarised.
    let mut budget = MAX_OUTPUT_BYTES - 1024;
    let files: Vec<Value> = r
        .files
        .unwrap_or_default()
        .into_iter()
        .map(|f| {
            let diff = if f.diff.len() <= budget {
                budget -= f.diff.len();
                f.diff
            } else {
                format!(
                    "(diff of {} bytes omitted: over the output limit; read the file to check)",
                    f.diff.len()
                )
            };
            json!({"path": f.path, "diff": diff, "hash": f.hash})
        })
        .collect();
    Ok(json!({ "files": files }))
}

async fn list_directory<C: Connect>(
    conn: &AgentConn<C>,
    obj: &Map<String, Value>,
) -> Result<Value, Fail> {
    let path = path_arg(obj)?;
    let r = conn
        .list_directory(Some(&path), &LsRequest::default())
        .await?;
    let total = r.total_entries.unwrap_or(r.contents.len() as u64);
    let mut used = 256;
    let mut entries = Vec::new();
    for f in &r.contents {
        let kind = if f.is_dir {
            "dir"
        } else if f.is_symlink {
            "symlink"
        } else {
            "file"
        };
        let e = match (kind, f.size) {
            ("file", Some(size)) => json!({"name": f.name, "type": kind, "size": size}),
            _ => json!({"name": f.name, "type": kind}),
        };
        used += e.to_string().len() + 1;
        if used > MAX_OUTPUT_BYTES {
            break;
        }
        entries.push(e);
    }
    let mut v = json!({
        "path": r.absolute_path_string,
        "entries": entries,
        "total_entries": total,
    });
    if (entries.len() as u64) < total {
        v["note"] = json!(format!(
            "Only the first {} of {total} entries are shown (directories first, then by name). \
             Use execute with ls or find and a filter to see the rest.",
            entries.len()
        ));
    }
    Ok(v)
}
