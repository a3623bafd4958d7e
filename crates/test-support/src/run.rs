//! Running a command and looking at what it did.

use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixtures::bin;

/// How long [`run`] lets a command take before killing it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A finished (or killed) command.
#[derive(Debug, Clone)]
pub struct Run {
    /// The command line, for messages.
    pub command: String,
    /// Exit code; `None` when killed by a signal (or by the timeout).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub elapsed: Duration,
}

/// `Command::new(bin(name))` with stdin from /dev/null.
pub fn tool(name: &str) -> Command {
    let mut c = Command::new(bin(name));
    c.stdin(Stdio::null());
    c
}

/// Runs `cmd` to completion (at most [`DEFAULT_TIMEOUT`]), capturing stdout and stderr.
pub fn run(cmd: &mut Command) -> Run {
    run_timeout(cmd, DEFAULT_TIMEOUT)
}

/// Runs `cmd`, killing it after `timeout` (then `timed_out` is set and `code` is `None`).
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Run {
    let command = format!(
        "{} {}",
        PathBuf::from(cmd.get_program()).display(),
        cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    );
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{command}`: {e}"));
    let pipe = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = pipe(Box::new(child.stdout.take().expect("piped stdout")));
    let err = pipe(Box::new(child.stderr.take().expect("piped stderr")));
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            break status;
        }
        if start.elapsed() > timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("waiting for the killed child");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    Run {
        command,
        code: status.code(),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        timed_out,
        elapsed: start.elapsed(),
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.command)?;
        let status = if self.timed_out {
            format!("KILLED after {:?} (timeout)", self.elapsed)
        } else {
            format!("exit {:?}", self.code)
        };
        writeln!(f, "{status}")?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

impl Run {
    /// Panics (showing the run) unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "expected exit {code}:\n{self}");
        self
    }

    /// Panics unless the command exited 0.
    #[track_caller]
    pub fn expect_ok(&self) -> &Self {
        self.expect_code(0)
    }

    /// Stdout as the one JSON object `--json` prints (panics if it is anything else).
    #[track_caller]
    pub fn json(&self) -> Value {
        let v: Value = serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}):\n{self}"));
        assert!(v.is_object(), "stdout is JSON but not an object:\n{self}");
        v
    }

    /// `error.kind` of the `--json` object, if any.
    pub fn error_kind(&self) -> Option<String> {
        serde_json::from_str::<Value>(self.stdout.trim()).ok()?["error"]["kind"].as_str().map(str::to_string)
    }

    /// Non-empty stderr lines.
    pub fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().filter(|l| !l.trim().is_empty()).collect()
    }

    /// Whether the output shows a Rust panic or a backtrace.
    pub fn panicked(&self) -> bool {
        let all = format!("{}\n{}", self.stdout, self.stderr);
        all.contains("panicked at") || all.contains("stack backtrace") || all.contains("RUST_BACKTRACE")
    }

    /// The human error format: stdout empty, stderr exactly one line `error: …`, optionally followed
    /// by one line `hint: …`, and no panic. Returns the error line.
    #[track_caller]
    pub fn expect_one_line_error(&self) -> &str {
        assert!(!self.panicked(), "the command panicked:\n{self}");
        assert!(self.stdout.trim().is_empty(), "human mode printed to stdout on failure:\n{self}");
        let lines = self.stderr_lines();
        let ok = match lines.as_slice() {
            [e] => e.starts_with("error: "),
            [e, h] => e.starts_with("error: ") && h.starts_with("hint: "),
            _ => false,
        };
        assert!(ok, "stderr must be one `error: …` line and at most one `hint: …` line:\n{self}");
        lines[0]
    }
}
