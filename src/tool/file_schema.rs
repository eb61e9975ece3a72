//! The file tools as a model sees them: `read_file`, `write_file`, `edit_files`,
//! `list_directory`. Descriptions say when to use which (edit_files for changes, write_file for
//! new files or full rewrites) and what the content hash is for.

use serde_json::json;

use super::schema::{ToolDef, object};

/// Tool name: read a text file as numbered lines, paged, with its content hash.
pub const READ_FILE: &str = "read_file";
/// Tool name: create a file or replace it whole (optionally only if its hash still matches).
pub const WRITE_FILE: &str = "write_file";
/// Tool name: exact-text replacements in one or more files, applied all or nothing.
pub const EDIT_FILES: &str = "edit_files";
/// Tool name: a directory's entries with kinds and sizes.
pub const LIST_DIRECTORY: &str = "list_directory";

const READ_DESC: &str = "Read a text file on the agent machine. Returns its lines numbered \
    \"<n>\\t<line>\" (numbers are for reference only: never copy them into edits), the total \
    line count, and the file's content hash. Reads at most 2000 lines or 32 KiB per call; a \
    longer file comes back in pages with next_offset, which you pass as offset to continue. \
    Lines longer than 1024 bytes are cut. Files over 1 MiB, binary files and directories are \
    refused (use list_directory for directories, execute with grep/head/sed for huge files). \
    Prefer this to `cat` in execute. The hash identifies exactly this content: pass it as \
    if_match to edit_files or write_file to make sure nobody (another agent, a process, a \
    person) changed the file since you read it.";

const WRITE_DESC: &str = "Create a file, or replace a file's entire content, on the agent \
    machine. Missing parent directories are created; an existing file keeps its permissions \
    and owner. The write is atomic: readers see the old or the new file, never a mix. To \
    change part of an existing file use edit_files instead: it is shorter, safer, and keeps \
    the rest of the file as it is. Give if_match (the hash from read_file) when replacing a \
    file you read, so a change someone made meanwhile is not silently lost. Returns the new \
    content hash.";

const EDIT_DESC: &str = "Change existing files by search and replace: for each file, each \
    edit replaces the text `search` with `replace`, in order. `search` must match exactly one \
    place in the file (set replace_all to change every occurrence); copy it from read_file's \
    output without the line numbers, with enough surrounding lines to be unique. Matching \
    tolerates differences in indentation, trailing spaces and line endings, and the file keeps \
    its own indentation style and line endings. All files are changed or none: if any search \
    fails, nothing is written and the error says why, often with a hint (a near-miss line, or \
    search and replace swapped). Give if_match (the hash from read_file) per file to refuse \
    the edit if the file changed since you read it. Returns a unified diff and the new hash \
    of each file. Use write_file only for new files or complete rewrites.";

const LIST_DESC: &str = "List a directory on the agent machine: directories first, then \
    files, each with its type and size. Use it to find files before reading them.";

/// The file tools' definitions (with the `agent` argument when `agents` is given).
pub fn definitions(agents: Option<&[String]>) -> Vec<ToolDef> {
    let path = |what: &str| {
        json!({"type": "string", "description": format!(
            "Absolute path of the {what} on the agent machine, e.g. \"/home/user/project/src/main.rs\"."
        )})
    };
    vec![
        ToolDef {
            name: READ_FILE,
            description: READ_DESC.to_owned(),
            input_schema: object(
                agents,
                [
                    ("path", path("file")),
                    (
                        "offset",
                        json!({"type": "integer", "minimum": 1, "description":
                            "First line to return, 1-based. Default 1. Use next_offset from the \
                             previous call to read the next page."}),
                    ),
                    (
                        "limit",
                        json!({"type": "integer", "minimum": 1, "description":
                            "Most lines to return. Default and maximum 2000 (fewer when the \
                             lines are long: a page holds at most 32 KiB)."}),
                    ),
                ],
                &["path"],
            ),
        },
        ToolDef {
            name: WRITE_FILE,
            description: WRITE_DESC.to_owned(),
            input_schema: object(
                agents,
                [
                    ("path", path("file to create or replace")),
                    (
                        "content",
                        json!({"type": "string", "description":
                            "The complete new content of the file (text, written as UTF-8)."}),
                    ),
                    (
                        "if_match",
                        json!({"type": "string", "description":
                            "Optional: the content hash read_file returned. The write is refused \
                             if the file's content changed since (re-read it then)."}),
                    ),
                ],
                &["path", "content"],
            ),
        },
        ToolDef {
            name: EDIT_FILES,
            description: EDIT_DESC.to_owned(),
            input_schema: object(
                agents,
                [(
                    "files",
                    json!({"type": "array", "minItems": 1, "description":
                    "The files to change, each with its edits. All or nothing.",
                    "items": {
                        "type": "object",
                        "properties": {
                            "path": {"type": "string", "description":
                                "Absolute path of an existing file."},
                            "edits": {"type": "array", "minItems": 1, "description":
                                "Applied in order; each sees the result of the previous one.",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "search": {"type": "string", "description":
                                            "The exact existing text to replace (without \
                                             read_file's line numbers), unique in the file \
                                             unless replace_all is set."},
                                        "replace": {"type": "string", "description":
                                            "The text to put in its place (may be empty to \
                                             delete)."},
                                        "replace_all": {"type": "boolean", "default": false,
                                            "description":
                                            "Replace every occurrence of search instead of \
                                             requiring exactly one."}
                                    },
                                    "required": ["search", "replace"],
                                    "additionalProperties": false
                                }},
                            "if_match": {"type": "string", "description":
                                "Optional: the content hash read_file returned for this \
                                 file; the edit is refused if the file changed since."}
                        },
                        "required": ["path", "edits"],
                        "additionalProperties": false
                    }}),
                )],
                &["files"],
            ),
        },
        ToolDef {
            name: LIST_DIRECTORY,
            description: LIST_DESC.to_owned(),
            input_schema: object(agents, [("path", path("directory"))], &["path"]),
        },
    ]
}
