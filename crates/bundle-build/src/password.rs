//! Passwords of encrypted secret keys, and opening a key file that may need one. A password comes from
//! the terminal (asked on `/dev/tty` with echo off), from a file descriptor, or from an environment
//! variable whose *name* is given — never from the command line itself, where `ps` and shell history
//! would show it. Passwords live in [`Zeroizing`] buffers and are never put in an error message.

use std::io::Read;
use std::path::Path;

use bundle_core::signature::{SecretKey, SecretKeyFile, SignatureError};
use zeroize::Zeroizing;

/// Longest password read from a descriptor or a variable, in bytes.
const MAX_PASSWORD_BYTES: usize = 4096;

/// Where a password is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// Asked on the controlling terminal; `confirm` asks twice (a new key's password).
    Terminal,
    /// The first line read from this open file descriptor (e.g. `3` with `3< file` in the shell).
    Fd(i32),
    /// The value of the environment variable of this name.
    Env(String),
}

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("the secret key needs a password and there is no terminal to ask on ({0}); give it with --password-fd N or --password-env NAME")]
    NoTerminal(String),
    #[error("cannot read the password from file descriptor {fd}: {source}; open it for reading (e.g. `3< passfile` with --password-fd 3)")]
    Fd { fd: i32, source: std::io::Error },
    #[error("the environment variable {0} named by --password-env is not set (or not UTF-8)")]
    EnvMissing(String),
    #[error("the password is longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    #[error("the password is empty; choose one, or use --unencrypted for a key in clear")]
    Empty,
    #[error("the two passwords differ; nothing was written, run keygen again")]
    Mismatch,
}

impl PasswordError {
    /// A stable snake_case name, for JSON output.
    pub fn kind(&self) -> &'static str {
        match self {
            PasswordError::NoTerminal(_) => "no_terminal",
            PasswordError::Fd { .. } => "password_fd",
            PasswordError::EnvMissing(_) => "password_env",
            PasswordError::TooLong => "password_too_long",
            PasswordError::Empty => "empty_password",
            PasswordError::Mismatch => "password_mismatch",
        }
    }
}

/// Opening a key: either the password could not be had, or the key file refused it.
#[derive(Debug, thiserror::Error)]
pub enum KeyOpenError {
    #[error(transparent)]
    Password(#[from] PasswordError),
    #[error(transparent)]
    Key(#[from] SignatureError),
}

impl KeyOpenError {
    pub fn kind(&self) -> &'static str {
        match self {
            KeyOpenError::Password(e) => e.kind(),
            KeyOpenError::Key(e) => e.kind(),
        }
    }
}

impl PasswordSource {
    /// The source chosen by `--password-fd` / `--password-env` (at most one), else the terminal.
    pub fn from_options(fd: Option<i32>, env: Option<String>) -> PasswordSource {
        match (fd, env) {
            (Some(fd), _) => PasswordSource::Fd(fd),
            (None, Some(name)) => PasswordSource::Env(name),
            (None, None) => PasswordSource::Terminal,
        }
    }

    /// Reads a password. On a terminal `prompt` is shown and, with `confirm`, asked a second time;
    /// the two must match. One trailing newline (LF or CRLF) is not part of a password read from a
    /// descriptor or a variable, as with `minisign` reading a piped password.
    pub fn read(&self, prompt: &str, confirm: bool) -> Result<Zeroizing<String>, PasswordError> {
        let password = match self {
            PasswordSource::Terminal => {
                let first = ask(prompt)?;
                if confirm && *first != *ask("Password (again): ")? {
                    return Err(PasswordError::Mismatch);
                }
                first
            }
            PasswordSource::Fd(fd) => read_fd(*fd)?,
            PasswordSource::Env(name) => {
                let value = std::env::var(name).map_err(|_| PasswordError::EnvMissing(name.clone()))?;
                Zeroizing::new(strip_newline(value))
            }
        };
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong);
        }
        Ok(password)
    }
}

fn ask(prompt: &str) -> Result<Zeroizing<String>, PasswordError> {
    rpassword::prompt_password(prompt).map(Zeroizing::new).map_err(|e| PasswordError::NoTerminal(e.to_string()))
}

fn strip_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

/// The first line from descriptor `fd` (up to a newline or the end), read byte by byte so that
/// nothing after the line is taken from a shared pipe. The descriptor is left open.
#[allow(unsafe_code)]
fn read_fd(fd: i32) -> Result<Zeroizing<String>, PasswordError> {
    use std::os::fd::FromRawFd;
    let err = |source| PasswordError::Fd { fd, source };
    // SAFETY: F_GETFD only asks whether the descriptor is open; it touches no memory.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
        return Err(err(std::io::Error::last_os_error()));
    }
    // SAFETY: the descriptor is open (checked above); ManuallyDrop leaves closing it to its owner.
    let file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
    let mut bytes = Zeroizing::new(Vec::new());
    let mut byte = [0u8; 1];
    loop {
        match (&*file).read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) if bytes.len() >= MAX_PASSWORD_BYTES => return Err(PasswordError::TooLong),
            Ok(_) => bytes.push(byte[0]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(err(e)),
        }
    }
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    let text = String::from_utf8(std::mem::take(&mut *bytes)).map_err(|e| {
        let mut v = e.into_bytes();
        zeroize::Zeroize::zeroize(&mut v);
        err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the password is not UTF-8"))
    })?;
    Ok(Zeroizing::new(text))
}

/// A new key's password: asked twice on a terminal, refused when empty.
pub fn new_password(source: &PasswordSource) -> Result<Zeroizing<String>, PasswordError> {
    let password = source.read("Password for the new secret key: ", true)?;
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    Ok(password)
}

/// Opens a secret key file: in clear as is, encrypted with a password from `source` (read only
/// then, so an unencrypted key never needs one).
pub fn open_secret_key(path: &Path, source: &PasswordSource) -> Result<SecretKey, KeyOpenError> {
    match SecretKeyFile::read_file(path)? {
        SecretKeyFile::Plain(key) => Ok(key),
        SecretKeyFile::Encrypted(enc) => {
            let password = source.read(&format!("Password for {}: ", path.display()), false)?;
            Ok(enc.decrypt(password.as_bytes())?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newline_is_not_part_of_the_password() {
        assert_eq!(strip_newline("pw\n".into()), "pw");
        assert_eq!(strip_newline("pw\r\n".into()), "pw");
        assert_eq!(strip_newline("pw".into()), "pw");
        assert_eq!(strip_newline("pw\n\n".into()), "pw\n");
    }

    #[test]
    fn reads_the_first_line_of_a_descriptor_and_leaves_it_open() {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"s3cret\r\nrest").unwrap();
        std::io::Seek::rewind(&mut f).unwrap();
        let pw = PasswordSource::Fd(f.as_raw_fd()).read("", false).unwrap();
        assert_eq!(&*pw, "s3cret");
        let mut rest = String::new();
        f.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "rest");
        let err = PasswordSource::Fd(9999).read("", false).unwrap_err();
        assert_eq!(err.kind(), "password_fd");
    }

    #[test]
    fn env_source_names_a_variable() {
        let err = PasswordSource::Env("BUNDLE_BUILD_TEST_SURELY_UNSET".into()).read("", false).unwrap_err();
        assert_eq!(err.kind(), "password_env");
        assert!(err.to_string().contains("BUNDLE_BUILD_TEST_SURELY_UNSET"));
    }
}
