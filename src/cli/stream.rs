//! Live output and interactive terminals for the CLI: `exec` streaming, `output --follow`,
//! `logs` (raw, or NDJSON with `--json`), and `exec -t` (raw mode, keystrokes forwarded at once, SIGWINCH → resize).

use std::io::Write;
use std::os::fd::AsFd;

use anyhow::anyhow;
use bytes::Bytes;
use futures_util::StreamExt;

use super::json;
use crate::client::{AgentConn, ClientError, Connect};

/// The command line for `sh -c`: one argument unchanged, several quoted and joined as a shell
/// would have received them (`printf '%s\n' "a  b"` behaves as it does locally).
pub fn command_line(args: &[String]) -> anyhow::Result<String> {
    match args {
        [one] => Ok(one.clone()),
        many => shlex::try_join(many.iter().map(String::as_str))
            .map_err(|e| anyhow!("cannot quote the command: {e}")),
    }
}

/// Copies the process's output to stdout as it is written, from `from` until the process
/// exits: raw bytes, or with `as_json` NDJSON lines ([`json::Line`]). Output the agent no
/// longer retains (a slow reader on a fast writer) is skipped with a note on stderr (a
/// `skipped` line in JSON). Returns the offset reached.
pub async fn copy_output<C: Connect>(
    conn: &AgentConn<C>,
    id: &str,
    from: u64,
    as_json: bool,
) -> Result<u64, ClientError> {
    let mut out = Sink::new(from, as_json);
    loop {
        let mut s = std::pin::pin!(conn.follow(id, out.at()));
        let mut restart = None;
        while let Some(item) = s.next().await {
            match item {
                Ok(bytes) => {
                    // A closed stdout (`| head`) ends the copy quietly.
                    if out.write(&bytes).is_err() {
                        return Ok(out.at());
                    }
                }
                Err(ClientError::NotRetained { log_start, .. }) => {
                    out.skip(log_start);
                    restart = Some(log_start);
                }
                Err(e) => return Err(e),
            }
        }
        if restart.is_none() {
            return Ok(out.finish());
        }
    }
}

/// Prints bytes `[from, end)` of the log once (no waiting), raw or as NDJSON lines. Bytes the
/// agent no longer retains are skipped as [`copy_output`] skips them (a note on stderr, a
/// `skipped` line in JSON), and the rest is printed.
pub async fn print_log<C: Connect>(
    conn: &AgentConn<C>,
    id: &str,
    from: u64,
    as_json: bool,
) -> Result<(), ClientError> {
    let mut out = Sink::new(from, as_json);
    // The window may move on between the answer that names its start and the read from there
    // (a fast writer): a few tries, then the error.
    let mut tries = 0;
    let chunk = loop {
        match conn.log(id, out.at(), None).await {
            Err(ClientError::NotRetained { log_start, .. }) if tries < 3 => {
                out.skip(log_start);
                tries += 1;
            }
            r => break r?,
        }
    };
    if chunk.from > out.at() {
        out.skip(chunk.from);
    }
    // A whole-log answer (200) may start before `from`: those bytes were not asked for.
    let asked = usize::try_from(out.at() - chunk.from).unwrap_or(usize::MAX);
    if out
        .write(chunk.bytes.get(asked..).unwrap_or_default())
        .is_ok()
    {
        out.finish();
    }
    Ok(())
}

/// Where streamed output goes: stdout as it is, or NDJSON lines.
struct Sink {
    /// The offset of the next byte.
    at: u64,
    json: Option<json::Chunks>,
    out: std::io::Stdout,
}

impl Sink {
    fn new(at: u64, as_json: bool) -> Self {
        Self {
            at,
            json: as_json.then(|| json::Chunks::new(at)),
            out: std::io::stdout(),
        }
    }

    fn at(&self) -> u64 {
        self.at
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.at += bytes.len() as u64;
        match &mut self.json {
            None => {
                let mut out = self.out.lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Some(c) => c.push(bytes).iter().try_for_each(json::print_line),
        }
    }

    /// Bytes up to `to` are gone.
    fn skip(&mut self, to: u64) {
        match &mut self.json {
            None => eprintln!(
                "\r\nwgagent: {} bytes of output are no longer retained; continuing at byte {to}",
                to.saturating_sub(self.at)
            ),
            Some(c) => {
                for l in c.skip(to) {
                    let _ = json::print_line(&l);
                }
            }
        }
        self.at = to;
    }

    /// The end: returns the offset reached.
    fn finish(self) -> u64 {
        if let Some(c) = self.json {
            for l in c.finish() {
                let _ = json::print_line(&l);
            }
        }
        self.at
    }
}

/// The size of the terminal on stdin, if it is one.
pub fn terminal_size() -> Option<(u16, u16)> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into a valid pointer.
    let r = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
}

/// Puts the local terminal in raw mode until dropped.
pub struct RawMode {
    saved: Option<nix::sys::termios::Termios>,
}

impl RawMode {
    pub fn enter() -> Self {
        use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(stdin.as_fd()) else {
            return Self { saved: None };
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        Self { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                saved,
            );
        }
    }
}

/// Drives an interactive session on process `id` (started with a pty): local keystrokes go to
/// its terminal as they are typed, its output comes back live, window-size changes follow.
/// Returns when the process's output ends (it exited).
pub async fn interactive<C: Connect>(conn: &AgentConn<C>, id: &str) -> anyhow::Result<()> {
    let _raw = RawMode::enter();
    // Keystrokes: a blocking reader thread feeds a channel; each send carries everything typed
    // since the previous one, so a paste is one request and a keystroke is forwarded at once.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdin = std::io::stdin().lock();
        loop {
            match std::io::Read::read(&mut stdin, &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let input = {
        let conn = conn.clone();
        let id = id.to_owned();
        async move {
            while let Some(first) = rx.recv().await {
                let mut batch = first.to_vec();
                while let Ok(more) = rx.try_recv() {
                    batch.extend_from_slice(&more);
                }
                if conn.stdin(&id, Bytes::from(batch), false).await.is_err() {
                    break;
                }
            }
            std::future::pending::<()>().await;
        }
    };
    let resize = {
        let conn = conn.clone();
        let id = id.to_owned();
        async move {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut winch) = signal(SignalKind::window_change()) else {
                return std::future::pending::<()>().await;
            };
            while winch.recv().await.is_some() {
                if let Some((rows, cols)) = terminal_size() {
                    let _ = conn.resize(&id, rows, cols).await;
                }
            }
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        r = copy_output(conn, id, 0, false) => { r?; }
        () = input => {}
        () = resize => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_argument_is_a_command_line_several_are_quoted() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            command_line(&v(&["ls -l | wc -l"])).unwrap(),
            "ls -l | wc -l"
        );
        // Whatever the quoting, a shell splits it back into the same words.
        for words in [
            &["printf", "%s\\n", "a  b"][..],
            &["echo", "it's", "$HOME", "a\"b", "", "*"][..],
        ] {
            let line = command_line(&v(words)).unwrap();
            assert_eq!(shlex::split(&line).unwrap(), words, "{line}");
        }
    }
}
