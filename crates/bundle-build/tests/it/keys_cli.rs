//! Encrypted secret keys through the real binary: `keygen` encrypts by default (password from a
//! terminal asked twice, a descriptor or a named variable, never the command line); `build` opens an
//! encrypted key the same ways; a wrong password fails with exit 2 and writes nothing; and the real
//! `minisign` and we open each other's encrypted keys (skipped with a message without `minisign`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use test_support::{copy_spec, diff_snapshots, run, snapshot, KeyPair, Run};

const BIN: &str = env!("CARGO_BIN_EXE_bundle-build");
const PW: &str = "correct horse battery staple";
const PW_VAR: &str = "BUNDLE_TEST_KEY_PASSWORD";

fn bb() -> Command {
    let mut c = Command::new(BIN);
    c.stdin(Stdio::null()).env_remove(PW_VAR);
    c
}

fn minisign() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("minisign")).find(|p| p.is_file())
}

/// `build` of fixture 1.0.0 with `key`, extra arguments before `--json`.
fn build_with(key: &Path, out: &Path, extra: &[&str], password_env: Option<&str>) -> Run {
    let spec = copy_spec("1.0.0", &out.with_extension("spec"));
    let mut c = bb();
    c.arg("build").arg(&spec).arg("--key").arg(key).arg("--out").arg(out).args(extra).arg("--json");
    c.env("SOURCE_DATE_EPOCH", "1700000000");
    if let Some(pw) = password_env {
        c.env(PW_VAR, pw);
    }
    run(&mut c)
}

fn verify(bundle: &Path, public: &Path) -> Run {
    run(bb().arg("verify").arg(bundle).arg("--trust").arg(public).arg("--json"))
}

/// The kdf field of a key file: `Sc` (encrypted) or zeros.
fn kdf(key: &Path) -> Vec<u8> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(key).unwrap();
    let blob = base64::engine::general_purpose::STANDARD.decode(text.lines().nth(1).unwrap()).unwrap();
    blob[2..4].to_vec()
}

fn assert_password_not_shown(r: &Run) {
    assert!(!r.stdout.contains(PW) && !r.stderr.contains(PW), "the password was printed:\n{r}");
}

#[test]
fn keygen_encrypts_by_default_and_build_opens_the_key_from_env_or_fd() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = KeyPair::keygen_encrypted(&tmp.path().join("release"), PW);
    assert_eq!(kdf(&pair.secret_path), b"Sc");

    // --password-env NAME
    let out = tmp.path().join("env");
    let r = build_with(&pair.secret_path, &out, &["--password-env", PW_VAR], Some(PW));
    r.expect_ok();
    assert_password_not_shown(&r);
    let bundle = PathBuf::from(r.json()["bundle"].as_str().unwrap());
    verify(&bundle, &pair.public_path).expect_ok();

    // --password-fd 3 with `3< file`: the same bundle, byte for byte.
    let pwfile = tmp.path().join("pw.txt");
    std::fs::write(&pwfile, format!("{PW}\n")).unwrap();
    let spec = copy_spec("1.0.0", &tmp.path().join("fd.spec"));
    let out2 = tmp.path().join("fd");
    let script = format!(
        "exec '{BIN}' build '{}' --key '{}' --out '{}' --password-fd 3 --json 3< '{}'",
        spec.display(),
        pair.secret_path.display(),
        out2.display(),
        pwfile.display()
    );
    let r = run(Command::new("sh").arg("-c").arg(&script).env("SOURCE_DATE_EPOCH", "1700000000"));
    r.expect_ok();
    let bundle2 = PathBuf::from(r.json()["bundle"].as_str().unwrap());
    assert_eq!(std::fs::read(&bundle).unwrap(), std::fs::read(&bundle2).unwrap());

    // No password anywhere and no terminal: a clear error, exit 2.
    let out3 = tmp.path().join("none");
    let r = build_with(&pair.secret_path, &out3, &[], None);
    r.expect_code(2);
    assert_eq!(r.error_kind().as_deref(), Some("no_terminal"), "{r}");
    assert!(!out3.exists(), "a failed build wrote {}", out3.display());
}

#[test]
fn wrong_password_fails_with_exit_2_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let pair = KeyPair::keygen_encrypted(&tmp.path().join("release"), PW);
    let out = tmp.path().join("dist");
    std::fs::create_dir(&out).unwrap();
    let before = snapshot(tmp.path());
    let r = build_with(&pair.secret_path, &out, &["--password-env", PW_VAR], Some("Tr0ub4dor&3"));
    r.expect_code(2);
    assert_eq!(r.error_kind().as_deref(), Some("wrong_password"), "{r}");
    assert!(!r.stdout.contains("Tr0ub4dor") && !r.stderr.contains("Tr0ub4dor"), "{r}");
    let mut after = snapshot(tmp.path());
    // Only the copied spec directory is new (the test made it).
    after.retain(|path, _| !path.starts_with("dist.spec"));
    assert!(
        diff_snapshots(&before, &after).is_empty(),
        "a wrong password changed files: {:?}",
        diff_snapshots(&before, &after)
    );
    // Human form: one line saying what is wrong.
    let spec = copy_spec("1.0.0", &tmp.path().join("h.spec"));
    let r = run(bb()
        .arg("build")
        .arg(&spec)
        .arg("--key")
        .arg(&pair.secret_path)
        .arg("--out")
        .arg(&out)
        .args(["--password-env", PW_VAR])
        .env(PW_VAR, "nope"));
    r.expect_code(2);
    assert!(r.stderr.contains("wrong password"), "{r}");
}

#[test]
fn keygen_refuses_an_empty_password_and_a_missing_variable_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("k");
    let r = run(bb().args(["keygen", "--password-env", PW_VAR, "--json", "--out"]).arg(&prefix).env(PW_VAR, ""));
    r.expect_code(2);
    assert_eq!(r.error_kind().as_deref(), Some("empty_password"), "{r}");
    let r = run(bb().args(["keygen", "--password-env", PW_VAR, "--json", "--out"]).arg(&prefix));
    r.expect_code(2);
    assert_eq!(r.error_kind().as_deref(), Some("password_env"), "{r}");
    // No terminal and no option: keygen does not quietly write a key in clear.
    let r = run(bb().args(["keygen", "--json", "--out"]).arg(&prefix));
    r.expect_code(2);
    assert_eq!(r.error_kind().as_deref(), Some("no_terminal"), "{r}");
    assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none(), "keygen wrote files");
    // --unencrypted and a password option do not go together; there is no option taking the password.
    run(bb().args(["keygen", "--unencrypted", "--password-env", PW_VAR, "--out"]).arg(&prefix)).expect_code(2);
    run(bb().args(["keygen", "--password", PW, "--out"]).arg(&prefix)).expect_code(2);
    // --unencrypted: today's key in clear.
    let r = run(bb().args(["keygen", "--unencrypted", "--json", "--out"]).arg(&prefix));
    r.expect_ok();
    assert_eq!(r.json()["encrypted"], false);
    assert_eq!(kdf(&tmp.path().join("k.key")), [0, 0]);
}

/// Runs `cmd` under `script(1)` so it has a terminal, typing `input` into it.
fn on_terminal(cmd: &str, input: &str) -> Run {
    let mut child = Command::new("script")
        .args(["-qec", cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove(PW_VAR)
        .spawn()
        .expect("script(1)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        // Typed a line at a time, after the prompt had time to appear (and echo to be turned off).
        for line in input.split_inclusive('\n') {
            std::thread::sleep(std::time::Duration::from_millis(700));
            stdin.write_all(line.as_bytes()).unwrap();
            stdin.flush().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let out = child.wait_with_output().unwrap();
    Run {
        command: cmd.to_string(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        timed_out: false,
        elapsed: Default::default(),
    }
}

#[test]
fn keygen_asks_twice_on_a_terminal_without_echo() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipping: script(1) is not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("tty");
    let cmd = format!("'{BIN}' keygen --out '{}'", prefix.display());
    let r = on_terminal(&cmd, "first\nsecond\n");
    assert_ne!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains("differ"), "{r}");
    assert!(!prefix.with_extension("key").exists(), "mismatched passwords still wrote a key");

    let r = on_terminal(&cmd, &format!("{PW}\n{PW}\n"));
    assert_eq!(r.code, Some(0), "{r}");
    assert!(r.stdout.contains("Password"), "no prompt on the terminal:\n{r}");
    assert!(!r.stdout.contains(PW), "the password was echoed:\n{r}");
    let key = tmp.path().join("tty.key");
    assert_eq!(kdf(&key), b"Sc");
    // The key opens with that password, typed once on the terminal by `build`.
    let spec = copy_spec("1.0.0", &tmp.path().join("spec"));
    let out = tmp.path().join("out");
    let cmd = format!(
        "SOURCE_DATE_EPOCH=1 '{BIN}' build '{}' --key '{}' --out '{}'",
        spec.display(),
        key.display(),
        out.display()
    );
    let r = on_terminal(&cmd, &format!("{PW}\n"));
    assert_eq!(r.code, Some(0), "{r}");
    assert!(out.join("fieldlog-1.0.0.bundle.tar.gz").is_file(), "{r}");
}

/// Runs minisign with `stdin_text` on its standard input (minisign 0.11 reads a password there
/// when it is not a terminal).
fn minisign_with_input(bin: &Path, dir: &Path, args: &[&str], stdin_text: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run minisign");
    child.stdin.take().unwrap().write_all(stdin_text.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn minisign_signs_with_our_encrypted_key_and_we_build_with_its_encrypted_key() {
    let Some(ms) = minisign() else {
        eprintln!("skipping: `minisign` is not on PATH");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();

    // Ours -> minisign: `minisign -S` opens our encrypted key with the password and signs; the
    // signature verifies with our .pub (minisign -V).
    let ours = KeyPair::keygen_encrypted(&d.join("ours"), PW);
    std::fs::write(d.join("msg"), b"release notes\n").unwrap();
    let out = minisign_with_input(
        &ms,
        d,
        &["-S", "-s", "ours.key", "-m", "msg", "-t", "app:x\tversion:1\tsequence:1"],
        &format!("{PW}\n"),
    );
    assert!(out.status.success(), "minisign could not open our key: {}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(&ms).args(["-Vm", "msg", "-p"]).arg(&ours.public_path).current_dir(d).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // And it refuses a wrong password, as we do.
    let out = minisign_with_input(&ms, d, &["-S", "-s", "ours.key", "-m", "msg", "-x", "other.minisig"], "wrong\n");
    assert!(!out.status.success());

    // minisign -> ours: a key made by `minisign -G` (encrypted by default) signs a bundle through
    // `bundle-build build --password-env`, which verifies with minisign's .pub.
    let out = minisign_with_input(&ms, d, &["-G", "-p", "theirs.pub", "-s", "theirs.key"], &format!("{PW}\n{PW}\n"));
    assert!(out.status.success(), "minisign -G: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(kdf(&d.join("theirs.key")), b"Sc");
    let r = build_with(&d.join("theirs.key"), &d.join("dist"), &["--password-env", PW_VAR], Some(PW));
    r.expect_ok();
    verify(Path::new(r.json()["bundle"].as_str().unwrap()), &d.join("theirs.pub")).expect_ok();
    let r = build_with(&d.join("theirs.key"), &d.join("dist2"), &["--password-env", PW_VAR], Some("wrong"));
    r.expect_code(2);
    assert_eq!(r.error_kind().as_deref(), Some("wrong_password"), "{r}");
}
