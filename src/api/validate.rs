//! Checks of a start request before anything is spawned: what the kernel would refuse at
//! `execve` (so far a 500 with "nul byte found" or `E2BIG`) becomes a 400 that names the limit.
//!
//! The process runs as `sh -c <command>` with the agent's environment merged with the
//! request's (request wins), so that is what is measured against the kernel's limits:
//! - every argument and every `NAME=value` string: at most `MAX_ARG_STRLEN` (32 pages,
//!   131,072 bytes with its terminating NUL);
//! - all arguments and environment strings with their NULs, plus one pointer each: at most
//!   `ARG_MAX` (`sysconf(_SC_ARG_MAX)`, a quarter of the stack limit: 2 MiB under the usual
//!   8 MiB), less a small margin for what `execve` adds (the program path).
//!
//! `timeout_ms: 0` is refused rather than read as "kill at once" or "no deadline" (omitting the
//! field means no deadline), and deadlines beyond a year are refused (they would overflow the
//! timer, and mean "none" anyway).

use axum::http::StatusCode;

use super::ApiError;
use super::types::StartProcessRequest;

/// `MAX_ARG_STRLEN` of Linux: one argument or environment string, NUL included.
pub const MAX_ARG_STRLEN: usize = 32 * 4096;
/// Bytes kept free of `ARG_MAX` for what `execve` adds besides argv and envp.
const EXEC_MARGIN: usize = 4096;
/// Longest `timeout_ms` accepted: 365 days.
pub const MAX_TIMEOUT_MS: u64 = 365 * 24 * 3600 * 1000;

/// Refuses a start request the kernel or the manager could not honour (400, naming the
/// problem). Reads the agent's own environment, which the process inherits.
pub fn start_request(req: &StartProcessRequest) -> Result<(), ApiError> {
    let bad = |message: String, detail: &str| {
        ApiError::new(StatusCode::BAD_REQUEST, message).with_detail(detail.to_owned())
    };
    if let Some(at) = req.command.find('\0') {
        return Err(bad(
            format!("Command contains a NUL byte (at byte {at})."),
            "the command is passed to `sh -c` as a C string, which cannot hold NUL",
        ));
    }
    if let Some(dir) = &req.workdir {
        if let Some(at) = dir.find('\0') {
            return Err(bad(
                format!("Working directory contains a NUL byte (at byte {at})."),
                "paths are C strings, which cannot hold NUL",
            ));
        }
        if dir.len() >= libc::PATH_MAX as usize {
            return Err(bad(
                format!(
                    "Working directory is too long: {} bytes (the limit is PATH_MAX, {} bytes).",
                    dir.len(),
                    libc::PATH_MAX - 1
                ),
                "the kernel refuses longer paths",
            ));
        }
    }
    for (name, value) in &req.env {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(bad(
                format!("Invalid environment variable name {name:?}."),
                "a name must be non-empty, without '=' or NUL",
            ));
        }
        if let Some(at) = value.find('\0') {
            return Err(bad(
                format!("Environment variable {name} contains a NUL byte (at byte {at})."),
                "environment values are C strings, which cannot hold NUL",
            ));
        }
    }
    match req.timeout_ms {
        Some(0) => {
            return Err(bad(
                "timeout_ms must be at least 1.".to_owned(),
                "omit timeout_ms for no deadline",
            ));
        }
        Some(ms) if ms > MAX_TIMEOUT_MS => {
            return Err(bad(
                format!("timeout_ms {ms} is too large (at most {MAX_TIMEOUT_MS}, one year)."),
                "omit timeout_ms for no deadline",
            ));
        }
        _ => {}
    }
    exec_size(req, arg_max())
}

/// The kernel's `ARG_MAX` for our children (`sysconf(_SC_ARG_MAX)`; 128 KiB if unknown, the
/// historical minimum).
fn arg_max() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_ARG_MAX) };
    usize::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .unwrap_or(128 * 1024)
}

/// Checks `sh -c <command>` with the merged environment against the per-string and total
/// limits of `execve`.
fn exec_size(req: &StartProcessRequest, arg_max: usize) -> Result<(), ApiError> {
    let too_big = |message: String, detail: &str| {
        ApiError::new(StatusCode::BAD_REQUEST, message).with_detail(detail.to_owned())
    };
    let command = req.command.len() + 1;
    if command > MAX_ARG_STRLEN {
        return Err(too_big(
            format!(
                "Command is too long: {} bytes (one argument may be at most {} bytes, the kernel's MAX_ARG_STRLEN).",
                req.command.len(),
                MAX_ARG_STRLEN - 1
            ),
            "pass large input through a file or stdin instead",
        ));
    }
    let mut total = "sh".len() + 1 + "-c".len() + 1 + command + 3 * size_of::<usize>();
    // The agent's environment, minus what the request overrides, plus the request's.
    for (name, value) in std::env::vars_os() {
        let overridden = name.to_str().is_some_and(|n| req.env.contains_key(n));
        if !overridden {
            total += name.len() + 1 + value.len() + 1 + size_of::<usize>();
        }
    }
    for (name, value) in &req.env {
        let entry = name.len() + 1 + value.len() + 1;
        if entry > MAX_ARG_STRLEN {
            return Err(too_big(
                format!(
                    "Environment variable {name} is too long: {entry} bytes as NAME=value (at most {MAX_ARG_STRLEN}, the kernel's MAX_ARG_STRLEN)."
                ),
                "pass large input through a file or stdin instead",
            ));
        }
        total += entry + size_of::<usize>();
    }
    let limit = arg_max.saturating_sub(EXEC_MARGIN);
    if total > limit {
        return Err(too_big(
            format!(
                "Command and environment are too large together: {total} bytes (the kernel allows {limit}: ARG_MAX, a quarter of the stack limit)."
            ),
            "shorten the command or the environment, or pass data through a file or stdin",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(command: &str) -> StartProcessRequest {
        StartProcessRequest {
            command: command.to_owned(),
            ..Default::default()
        }
    }

    fn message(r: Result<(), ApiError>) -> String {
        let e = r.expect_err("should be refused");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        e.message
    }

    #[test]
    fn nul_bytes_are_refused_where_they_are() {
        assert!(message(start_request(&req("echo a\0b"))).contains("NUL byte (at byte 6)"));
        let mut r = req("true");
        r.workdir = Some("/tmp/\0".into());
        assert!(message(start_request(&r)).contains("Working directory contains a NUL"));
        let mut r = req("true");
        r.env.insert("A".into(), "x\0".into());
        assert!(message(start_request(&r)).contains("A contains a NUL byte"));
        let mut r = req("true");
        r.env.insert("A=B".into(), "x".into());
        assert!(message(start_request(&r)).contains("Invalid environment variable name"));
        assert!(start_request(&req("echo ok")).is_ok());
    }

    #[test]
    fn sizes_are_checked_against_the_kernel_limits() {
        let max = MAX_ARG_STRLEN - 1;
        assert!(start_request(&req(&"x".repeat(max))).is_ok());
        let m = message(start_request(&req(&"x".repeat(max + 1))));
        assert!(m.contains("MAX_ARG_STRLEN") && m.contains("131071"), "{m}");
        let mut r = req("true");
        r.env.insert("BIG".into(), "v".repeat(MAX_ARG_STRLEN));
        assert!(message(start_request(&r)).contains("BIG is too long"));
        // Many strings, each fine, too many together.
        let mut r = req("true");
        for i in 0..20 {
            r.env.insert(format!("V{i}"), "v".repeat(120_000));
        }
        let m = message(exec_size(&r, 2 << 20));
        assert!(m.contains("ARG_MAX"), "{m}");
        assert!(exec_size(&req("true"), 2 << 20).is_ok());
    }

    #[test]
    fn timeout_zero_and_huge_are_refused() {
        let mut r = req("true");
        r.timeout_ms = Some(0);
        assert!(message(start_request(&r)).contains("at least 1"));
        r.timeout_ms = Some(u64::MAX);
        assert!(message(start_request(&r)).contains("too large"));
        r.timeout_ms = Some(MAX_TIMEOUT_MS);
        assert!(start_request(&r).is_ok());
        let mut r = req("true");
        r.workdir = Some("a".repeat(5000));
        assert!(message(start_request(&r)).contains("PATH_MAX"));
    }
}
