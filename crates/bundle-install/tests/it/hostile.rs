//! Hostile input through the real `bundle-install` binary: crafted archives, policy attacks
//! (rollback, fast-forward, mix-and-match, revoked keys), planted symlinks and swapped files.
//!
//! **The catalogue.** Every case of `test_support::catalogue` (the same table `bundle-build
//! verify` is tested with) is run four ways at once, each in a fresh temp dir `T` holding a copy of
//! a real installed 1.0.0 fieldlog site (`T/site`, signed-by key in `trust/`, a note written by the
//! app), a sentinel directory beside it (`T/sentinel`), the bundle (`T/in/`) and an empty directory
//! for a first install (`T/fresh/`):
//! * `apply BUNDLE --root T/site` (an upgrade 1.0.0 → 4.0.0 were the bundle good),
//! * `apply BUNDLE --root T/fresh/root --trust KEY` (a first install into a root that does not exist),
//! * `verify BUNDLE --root T/site` (the site's trust store) and `verify BUNDLE --trust KEY`.
//!
//! Each must exit with the case's code and `error.kind` (the message naming the culprit, one line
//! of printable text, no panic), and afterwards the whole of `T` must be exactly as before: every
//! node, mode, file hash and symlink target of the site, the sentinel, the input and the (still
//! empty) `T/fresh/` — the staging area cleaned, the first-install root not left behind. The one
//! thing not compared is the content of `T/site/state/lock`: each command writes its holder record
//! (pid, command, time) there by design.
//!
//! **Policy.** Validly signed bundles the site must still refuse (exit 4, nothing changed): a lower
//! sequence, an older version, the same version with other content (with and without
//! `--reinstall`), an absurd sequence (`u64::MAX`, or a jump beyond `MAX_SEQUENCE_JUMP`), another
//! app, a site too old for the bundle; keys revoked on the site (also when the key file is put
//! back into `trust/`), and `--trust` naming a key the site does not trust.
//!
//! **Planted symlinks.** A site with `releases/4.0.0`, `data`, `state/staging`, `backups`, `store`,
//! `store/wheels`, a store entry,
//! `data/client.db`, … pointing elsewhere: apply must fail cleanly and never write through the
//! link (the target is a sentinel, compared before and after).
//!
//! **What is installed is what was verified.** A bundle file replaced between the signed-head read
//! and the payload read is refused (`bundle_changed`); a bundle file destroyed after verification
//! (by the bundle's own `pre_apply` hook) does not matter, because only the staged bytes are used.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use bundle_core::manifest::Manifest;
use serde_json::Value;
use test_support::catalogue::{case, env, Case, Input};
use test_support::{
    copy_site, copy_spec, diff_snapshots, make_sentinel, run, run_timeout, scratch_dir, site_python, snapshot,
    snapshot_ignoring_lock, test_secret_key, KeyPair, Parts, Run,
};

const INSTALL: &str = env!("CARGO_BIN_EXE_bundle-install");

// ---------------------------------------------------------------------------------------------
// The base site and small helpers.

/// The installed 1.0.0 site every case copies (built once per process).
fn base_site() -> &'static Path {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let e = env();
        let root = scratch_dir("hostile-base").join("site");
        let r = run(Command::new(INSTALL)
            .arg("apply")
            .arg(e.bundle("1.0.0"))
            .arg("--root")
            .arg(&root)
            .arg("--trust")
            .arg(&e.signer.public_path)
            .arg("--python")
            .arg(site_python())
            .arg("--json"));
        assert_eq!(r.code, Some(0), "installing the 1.0.0 base site failed:\n{r}");
        let r = run(Command::new(root.join("current/venv/bin/fieldlog")).args([
            "add-note",
            "written before the attack",
            "--site",
            "ridge",
        ]));
        assert_eq!(r.code, Some(0), "fieldlog add-note on the base site failed:\n{r}");
        root
    })
}

/// `bundle-install ARGS --json`, from `cwd`.
fn install(cwd: &Path, args: &[&std::ffi::OsStr], timeout: Duration) -> Run {
    let mut c = Command::new(INSTALL);
    c.current_dir(cwd).args(args).arg("--json");
    run_timeout(&mut c, timeout)
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

/// The 4.0.0 fixture bundle with its manifest edited by `edit`, re-signed by `key` (default: the
/// signer) with the trusted comment the builder would write for it.
fn resigned(
    parts: &Parts,
    key: Option<&bundle_core::signature::SecretKey>,
    edit: impl FnOnce(&mut Manifest),
) -> Vec<u8> {
    let mut p = parts.clone();
    let mut m = p.parsed();
    edit(&mut m);
    let k = key.cloned().unwrap_or_else(|| env().key());
    p.set_manifest(&m, &k);
    p.bundle().to_bytes()
}

/// A key the site is made to trust and then revoke.
fn revoked_key() -> &'static KeyPair {
    static K: OnceLock<KeyPair> = OnceLock::new();
    K.get_or_init(|| KeyPair::write(&scratch_dir("hostile-keys").join("revoked"), &test_secret_key(77)))
}

fn trust_cmd(site: &Path, args: &[&str]) {
    let mut c = Command::new(INSTALL);
    c.arg("trust").args(args).arg("--root").arg(site).arg("--json");
    let r = run(&mut c);
    assert_eq!(r.code, Some(0), "trust {args:?} failed:\n{r}");
}

// ---------------------------------------------------------------------------------------------
// Scenarios: one input, the runs to make, what each must say.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Where {
    /// `apply --root T/site`
    SiteApply,
    /// `apply --root T/fresh/root --trust KEYS`
    FreshApply,
    /// `verify --root T/site`
    SiteVerify,
    /// `verify --trust KEYS`
    KeyVerify,
}

#[derive(Clone, Debug)]
struct Expect {
    code: i32,
    kind: String,
    contains: Vec<String>,
}

impl Expect {
    fn ok() -> Expect {
        Expect { code: 0, kind: String::new(), contains: vec![] }
    }
    fn err(code: i32, kind: &str, contains: &[&str]) -> Expect {
        Expect { code, kind: kind.into(), contains: contains.iter().map(|s| s.to_string()).collect() }
    }
}

type Setup = Box<dyn Fn(&Path) + Send + Sync>;
/// Places the bundle at the given path; returns keys to trust instead of the signer's.
type Place = Box<dyn Fn(&Path) -> Option<Vec<PathBuf>> + Send + Sync>;

struct Scenario {
    name: String,
    /// Places the bundle at the given path; returns keys to trust instead of the signer's.
    place: Place,
    /// Run on the site copy before the "before" snapshot.
    setup: Option<Setup>,
    apply_args: Vec<String>,
    runs: Vec<(Where, Expect)>,
    timeout: Duration,
    /// Each verify run must finish within this (a flood must be refused early).
    max_verify: Option<Duration>,
}

impl Scenario {
    fn new(name: &str, input: Input) -> Scenario {
        let fifo = input.is_fifo();
        Scenario {
            name: name.into(),
            place: Box::new(move |p| input.place(p)),
            setup: None,
            apply_args: vec![],
            runs: vec![],
            timeout: if fifo { Duration::from_secs(10) } else { Duration::from_secs(90) },
            max_verify: None,
        }
    }
    fn run(mut self, w: Where, e: Expect) -> Self {
        self.runs.push((w, e));
        self
    }
    fn setup(mut self, f: impl Fn(&Path) + Send + Sync + 'static) -> Self {
        self.setup = Some(Box::new(f));
        self
    }
    fn apply_args(mut self, args: &[&str]) -> Self {
        self.apply_args = args.iter().map(|s| s.to_string()).collect();
        self
    }
}

/// A catalogue case as a scenario: all four runs, with the few expectations that differ by place.
fn catalogue_scenario(c: &Case) -> Scenario {
    let base = Expect { code: c.exit, kind: c.kind.into(), contains: c.contains() };
    let site = match c.name {
        // A small-order key planted in the site's trust/ makes the trust store unreadable: every
        // command that reads it refuses (exit 2), whatever the bundle.
        "small_order_key_trusted" => Expect::err(2, "trust_store", &["small-order"]),
        _ => base.clone(),
    };
    let mut s = Scenario::new(c.name, c.input())
        .run(Where::SiteApply, site.clone())
        .run(Where::FreshApply, base.clone())
        .run(Where::SiteVerify, site)
        .run(Where::KeyVerify, base);
    if c.name.starts_with("million_") {
        s.max_verify = Some(Duration::from_secs(15));
    }
    s
}

fn check_run(name: &str, w: Where, r: &Run, e: &Expect, problems: &mut Vec<String>) {
    let mut fail = |m: String| problems.push(format!("[{name} / {w:?}] {m}\n{r}"));
    if r.timed_out {
        return fail("did not finish (it must refuse, not wait)".into());
    }
    if r.panicked() {
        return fail("panicked".into());
    }
    if r.code != Some(e.code) {
        return fail(format!("expected exit {} ({}), got {:?}", e.code, e.kind, r.code));
    }
    let v: Value = match serde_json::from_str(r.stdout.trim()) {
        Ok(v) => v,
        Err(err) => return fail(format!("stdout is not one JSON object: {err}")),
    };
    let command = if matches!(w, Where::SiteApply | Where::FreshApply) { "apply" } else { "verify" };
    if v["command"] != command || v["ok"] != (e.code == 0) {
        return fail(format!("wrong `command`/`ok` in {v}"));
    }
    if e.code == 0 {
        return;
    }
    if v["error"]["exit_code"] != e.code || v["error"]["kind"] != e.kind.as_str() {
        return fail(format!("expected error.kind {:?} (exit {}), got {}", e.kind, e.code, v["error"]));
    }
    let message = v["error"]["message"].as_str().unwrap_or_default();
    for s in &e.contains {
        if !message.contains(s.as_str()) {
            fail(format!("error.message should mention {s:?}: {message:?}"));
        }
    }
    if message.is_empty() || message.chars().any(char::is_control) {
        fail(format!("error.message must be one non-empty line of printable text: {message:?}"));
    }
}

/// Runs a scenario (see the module doc) and panics with every problem found.
fn run_scenario(s: Scenario) {
    let e = env();
    let name = s.name.as_str();
    let tmp =
        tempfile::Builder::new().prefix(&format!("{name}-")).tempdir_in(scratch_dir("hostile-cases")).expect("tempdir");
    let t = tmp.path();
    let (site, sentinel, input_dir, fresh, work) =
        (t.join("site"), t.join("sentinel"), t.join("in"), t.join("fresh"), t.join("work"));
    copy_site(base_site(), &site);
    make_sentinel(&sentinel);
    for d in [&input_dir, &fresh, &work] {
        std::fs::create_dir(d).unwrap();
    }
    let bundle = input_dir.join("case.bundle.tar.gz");
    let keys = (s.place)(&bundle).unwrap_or_else(|| vec![e.signer.public_path.clone()]);
    if keys != [e.signer.public_path.clone()] {
        // The site trusts exactly these keys.
        for f in std::fs::read_dir(site.join("trust")).unwrap().flatten() {
            if f.path().extension().is_some_and(|x| x == "pub") {
                std::fs::remove_file(f.path()).unwrap();
            }
        }
        for k in &keys {
            // Stored as `trust add` would: `<KEYID>.pub` (a key that does not parse keeps its name).
            let name = bundle_core::signature::PublicKey::read_file(k)
                .map(|pk| format!("{}.pub", pk.key_id()))
                .unwrap_or_else(|_| k.file_name().unwrap().to_string_lossy().into_owned());
            std::fs::copy(k, site.join("trust").join(name)).unwrap();
        }
    }
    if let Some(setup) = &s.setup {
        setup(&site);
    }
    let before = snapshot_ignoring_lock(t);
    let fresh_root = fresh.join("root");

    let results: Vec<(Where, Run)> = std::thread::scope(|scope| {
        let handles: Vec<_> = s
            .runs
            .iter()
            .map(|(w, _)| {
                let w = *w;
                let (site, bundle, keys, work, fresh_root, s) = (&site, &bundle, &keys, &work, &fresh_root, &s);
                scope.spawn(move || {
                    let py = site_python();
                    let mut args: Vec<&std::ffi::OsStr> = Vec::new();
                    match w {
                        Where::SiteApply | Where::FreshApply => {
                            args.extend([os("apply"), bundle.as_os_str(), os("--root")]);
                            if w == Where::SiteApply {
                                args.push(site.as_os_str());
                            } else {
                                args.push(fresh_root.as_os_str());
                                args.push(os("--trust"));
                                args.extend(keys.iter().map(|k| k.as_os_str()));
                            }
                            args.extend([os("--python"), py.as_os_str()]);
                            args.extend(s.apply_args.iter().map(os));
                        }
                        Where::SiteVerify => {
                            args.extend([os("verify"), bundle.as_os_str(), os("--root"), site.as_os_str()])
                        }
                        Where::KeyVerify => {
                            args.extend([os("verify"), bundle.as_os_str(), os("--trust")]);
                            args.extend(keys.iter().map(|k| k.as_os_str()));
                        }
                    }
                    (w, install(work, &args, s.timeout))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("run thread")).collect()
    });

    let mut problems = Vec::new();
    for ((w, r), (_, expect)) in results.iter().zip(&s.runs) {
        check_run(name, *w, r, expect, &mut problems);
        if s.max_verify.is_some() {
            eprintln!("[{name} / {w:?}] exit {:?} in {:?}", r.code, r.elapsed);
        }
        if let (Some(max), Where::SiteVerify | Where::KeyVerify) = (s.max_verify, w) {
            if r.elapsed > max {
                problems.push(format!(
                    "[{name} / {w:?}] took {:?}, more than {max:?}: the flood was read instead of refused early",
                    r.elapsed
                ));
            }
        }
    }
    if fresh_root.symlink_metadata().is_ok() {
        problems.push(format!(
            "[{name}] the first-install root {} was left behind: {:?}",
            fresh_root.display(),
            snapshot(&fresh)
        ));
    }
    let diff = diff_snapshots(&before, &snapshot_ignoring_lock(t));
    if !diff.is_empty() {
        problems.push(format!("[{name}] something outside a fresh staging area changed:\n{}", diff.join("\n")));
    }
    if !problems.is_empty() {
        if std::env::var_os("HOSTILE_KEEP").is_some() {
            eprintln!("[{name}] kept {}", tmp.keep().display());
        }
        panic!("{}", problems.join("\n\n"));
    }
}

// ---------------------------------------------------------------------------------------------
// The catalogue: one test per case.

macro_rules! catalogue_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                run_scenario(catalogue_scenario(case(stringify!($name))));
            }
        )*
    };
}

mod catalogue {
    use super::*;
    test_support::hostile_cases!(catalogue_tests);
}

// ---------------------------------------------------------------------------------------------
// Policy: validly signed, still refused.

fn parts4() -> Parts {
    env().parts()
}

fn parts1() -> &'static Parts {
    static P: OnceLock<Parts> = OnceLock::new();
    P.get_or_init(|| Parts::read(&env().bundle("1.0.0")))
}

fn sequence_of_1_0_0() -> u64 {
    parts1().parsed().sequence
}

/// A validly signed bundle the site refuses by policy: verify passes, apply exits 4.
fn policy(name: &str, bundle: Vec<u8>, kind: &str, contains: &[&str]) -> Scenario {
    Scenario::new(name, Input::Bytes(bundle))
        .run(Where::SiteApply, Expect::err(4, kind, contains))
        .run(Where::SiteVerify, Expect::ok())
        .run(Where::KeyVerify, Expect::ok())
}

#[test]
fn policy_lower_sequence() {
    let b = resigned(&parts4(), None, |m| m.sequence = 5);
    run_scenario(policy("lower_sequence", b, "lower_sequence", &["5"]));
}

#[test]
fn policy_older_version() {
    let b = resigned(parts1(), None, |m| {
        m.version = "0.9.0".into();
        m.upgrades_from = "0.9.0".into();
        m.sequence = 1;
    });
    run_scenario(policy("older_version", b, "downgrade", &["0.9.0"]));
}

/// 1.0.0 rebuilt with other config defaults: same version, other bundle id.
fn same_version_other_content() -> Vec<u8> {
    let mut p = parts1().clone();
    let mut m = p.parsed();
    let defaults = m.config.as_ref().expect("the fixture has a config").defaults.clone();
    let f = p.files.iter_mut().find(|f| f.path == defaults).expect("defaults in the payload");
    f.data.extend_from_slice(b"# rebuilt by someone else\n");
    let (size, sha) = (f.data.len() as u64, bundle_core::hash::sha256_hex(&f.data));
    let entry = m.files.iter_mut().find(|e| e.path == defaults).unwrap();
    entry.size = size;
    entry.sha256 = sha;
    m.payload.bytes = m.files.iter().map(|e| e.size).sum();
    p.set_manifest(&m, &env().key());
    p.bundle().to_bytes()
}

#[test]
fn policy_same_version_different_content() {
    run_scenario(policy(
        "same_version_different_content",
        same_version_other_content(),
        "same_version_different_content",
        &["1.0.0"],
    ));
}

#[test]
fn policy_same_version_reinstall_is_refused_and_changes_nothing() {
    let s = policy("reinstall", same_version_other_content(), "reinstall_unsupported", &["1.0.0"])
        .apply_args(&["--reinstall"]);
    run_scenario(s);
}

#[test]
fn policy_absurd_sequence_max() {
    let b = resigned(&parts4(), None, |m| m.sequence = u64::MAX);
    let s = policy("absurd_sequence_max", b, "absurd_sequence", &[&u64::MAX.to_string()])
        .run(Where::FreshApply, Expect::err(4, "absurd_sequence", &[]));
    run_scenario(s);
}

#[test]
fn policy_absurd_sequence_even_with_allow_downgrade() {
    let b = resigned(&parts4(), None, |m| m.sequence = u64::MAX);
    let s = policy("absurd_sequence_flag", b, "absurd_sequence", &[])
        .run(Where::FreshApply, Expect::err(4, "absurd_sequence", &[]))
        .apply_args(&["--allow-downgrade", "--reinstall"]);
    run_scenario(s);
}

#[test]
fn policy_absurd_sequence_jump() {
    let seq = sequence_of_1_0_0() + bundle_install::MAX_SEQUENCE_JUMP + 1;
    let b = resigned(&parts4(), None, |m| m.sequence = seq);
    run_scenario(policy("absurd_sequence_jump", b, "absurd_sequence", &[&seq.to_string()]));
}

#[test]
fn policy_another_app() {
    let b = resigned(&parts4(), None, |m| m.app = "otherapp".into());
    run_scenario(policy("another_app", b, "wrong_app", &["otherapp"]));
}

#[test]
fn policy_site_too_old_for_the_bundle() {
    let b = resigned(&parts4(), None, |m| m.upgrades_from = "2.0.0".into());
    run_scenario(policy("too_old", b, "too_old", &["2.0.0"]));
}

/// The highest sequence is the site's, not the current release's: after 4.0.0 was installed and
/// rolled back to 1.0.0, a validly signed 3.0.0 (an "upgrade" of the running release, but an older
/// sequence than the site has seen) is still refused without `--allow-downgrade`.
#[test]
fn policy_highest_sequence_survives_a_rollback() {
    let e = env();
    let tmp = tempfile::tempdir_in(scratch_dir("hostile-rollback")).unwrap();
    let site = tmp.path().join("site");
    copy_site(base_site(), &site);
    let apply = |bundle: &Path, extra: &[&str]| {
        run(Command::new(INSTALL)
            .arg("apply")
            .arg(bundle)
            .arg("--root")
            .arg(&site)
            .arg("--python")
            .arg(site_python())
            .arg("--json")
            .args(extra))
    };
    apply(&e.real, &[]).expect_ok();
    let r = run(Command::new(INSTALL).args(["rollback", "--restore-data", "--yes", "--json", "--root"]).arg(&site));
    assert_eq!(r.code, Some(0), "rollback to 1.0.0 failed:\n{r}");
    assert_eq!(std::fs::read_link(site.join("current")).unwrap(), Path::new("releases/1.0.0"));
    let state: Value = serde_json::from_slice(&std::fs::read(site.join("state/site.json")).unwrap()).unwrap();
    assert_eq!(state["highest_sequence"].as_u64(), Some(e.parts.parsed().sequence), "{state}");

    let before = snapshot_ignoring_lock(&site);
    let r = apply(&e.bundle("3.0.0"), &[]);
    assert_eq!((r.code, r.error_kind().as_deref()), (Some(4), Some("lower_sequence")), "{r}");
    let diff = diff_snapshots(&before, &snapshot_ignoring_lock(&site));
    assert!(diff.is_empty(), "a refused apply changed the site:\n{}", diff.join("\n"));
    let r = apply(&e.bundle("3.0.0"), &["--allow-downgrade"]);
    assert_eq!(r.code, Some(0), "with --allow-downgrade the older sequence installs:\n{r}");
}

// ---------------------------------------------------------------------------------------------
// Trust on the site.

fn revoke_on(site: &Path) {
    let k = revoked_key();
    trust_cmd(site, &["add", k.public_path.to_str().unwrap()]);
    trust_cmd(site, &["revoke", &k.key_id]);
}

fn signed_by_revoked() -> Vec<u8> {
    resigned(&parts4(), Some(&revoked_key().secret()), |_| {})
}

#[test]
fn trust_revoked_key_is_refused() {
    let id = revoked_key().key_id.clone();
    let s = Scenario::new("revoked_key", Input::Bytes(signed_by_revoked()))
        .setup(revoke_on)
        .run(Where::SiteApply, Expect::err(3, "revoked_key", &[&id]))
        .run(Where::SiteVerify, Expect::err(3, "revoked_key", &[&id]));
    run_scenario(s);
}

#[test]
fn trust_revoked_key_is_refused_even_if_also_trusted() {
    let id = revoked_key().key_id.clone();
    let s = Scenario::new("revoked_and_trusted", Input::Bytes(signed_by_revoked()))
        .setup(|site| {
            revoke_on(site);
            let k = revoked_key();
            std::fs::copy(&k.public_path, site.join("trust").join(format!("{}.pub", k.key_id))).unwrap();
            assert!(site.join("trust/revoked").join(format!("{}.pub", k.key_id)).is_file());
        })
        .run(Where::SiteApply, Expect::err(3, "revoked_key", &[&id]))
        .run(Where::SiteVerify, Expect::err(3, "revoked_key", &[&id]));
    run_scenario(s);
}

#[test]
fn trust_revoked_key_named_with_trust_flag() {
    let k = revoked_key();
    let s = Scenario::new("revoked_on_cli", Input::Bytes(signed_by_revoked()))
        .setup(revoke_on)
        .apply_args(&["--trust", k.public_path.to_str().unwrap()])
        .run(Where::SiteApply, Expect::err(3, "revoked_key", &[&k.key_id]));
    run_scenario(s);
}

/// Issue 13 item 6: a validly signed manifest whose SQLite `path` points into the installer's own
/// files (the swap target `current/`, `releases/`, `backups/`, `trust/`, `state/`, `site.yaml`, the
/// reserved `store/` and `scratch/`, a dot name) is refused by the verifier before anything
/// changes; two databases sharing one `BUNDLE_DB_URL_` variable likewise.
#[test]
fn signed_database_path_into_installer_directories_is_refused() {
    let paths = [
        "current/client.db",
        "releases/4.0.0/x.db",
        "backups/x.db",
        "trust/client.pub",
        "state/site.json",
        "site.yaml",
        "store/x.db",
        "scratch/x.db",
        ".current.new",
    ];
    std::thread::scope(|scope| {
        for p in paths {
            scope.spawn(move || {
                let bytes = resigned(&parts4(), None, |m| {
                    m.databases.iter_mut().find(|d| d.name == "client").unwrap().path = p.into()
                });
                let s = Scenario::new(&format!("reserved_db_path_{}", p.replace('/', "_")), Input::Bytes(bytes))
                    .run(Where::SiteApply, Expect::err(3, "invalid_manifest", &[p]))
                    .run(Where::FreshApply, Expect::err(3, "invalid_manifest", &[p]))
                    .run(Where::SiteVerify, Expect::err(3, "invalid_manifest", &[p]));
                run_scenario(s);
            });
        }
    });
    let bytes = resigned(&parts4(), None, |m| {
        for d in &mut m.databases {
            d.name = if d.name == "client" { "client-db".into() } else { "client_db".into() };
        }
    });
    let s = Scenario::new("db_env_clash", Input::Bytes(bytes))
        .run(Where::SiteApply, Expect::err(3, "invalid_manifest", &["BUNDLE_DB_URL_CLIENT_DB"]))
        .run(Where::SiteVerify, Expect::err(3, "invalid_manifest", &["BUNDLE_DB_URL_CLIENT_DB"]));
    run_scenario(s);
}

/// Issue 13 item 7: a signed bundle whose dependency wheel is a decompression bomb of many members
/// just under the old 4 MiB ratio floor (each 4 MiB − 1 of zeros, ~1000:1) is refused before
/// anything is unpacked (`zip_bomb`, naming the wheel, exit 1), and the site is put back on 1.0.0.
#[test]
fn wheel_bomb_of_many_small_members_is_refused() {
    use std::io::Write;
    let mut p = parts4();
    let mut m = p.parsed();
    let victim = m.wheels.iter().find(|w| **w != m.app_wheel).expect("a dependency wheel").clone();
    let label = victim.rsplit('/').next().unwrap().to_string();
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let zeros = vec![0u8; (4 << 20) - 1];
    for i in 0..16 {
        z.start_file(
            format!("bomb/zeros{i}.bin"),
            zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated),
        )
        .unwrap();
        z.write_all(&zeros).unwrap();
    }
    let data = z.finish().unwrap().into_inner();
    assert!(data.len() < 200_000, "the bomb is small: {} bytes", data.len());
    let f = p.files.iter_mut().find(|f| f.path == victim).unwrap();
    f.data = data;
    let (size, sha) = (f.data.len() as u64, bundle_core::hash::sha256_hex(&f.data));
    let entry = m.files.iter_mut().find(|e| e.path == victim).unwrap();
    entry.size = size;
    entry.sha256 = sha;
    m.payload.bytes = m.files.iter().map(|e| e.size).sum();
    p.set_manifest(&m, &env().key());
    let tmp = tempfile::tempdir_in(scratch_dir("hostile-bomb")).unwrap();
    let site = tmp.path().join("site");
    copy_site(base_site(), &site);
    let bundle = tmp.path().join("bomb.bundle.tar.gz");
    std::fs::write(&bundle, p.bundle().to_bytes()).unwrap();
    let r = run(Command::new(INSTALL)
        .arg("apply")
        .arg(&bundle)
        .arg("--root")
        .arg(&site)
        .arg("--python")
        .arg(site_python())
        .arg("--json"));
    assert_eq!((r.code, r.error_kind().as_deref()), (Some(1), Some("zip_bomb")), "{r}");
    assert!(r.stdout.contains(&label), "the error names the wheel:\n{r}");
    assert_eq!(std::fs::read_link(site.join("current")).unwrap(), Path::new("releases/1.0.0"));
    assert!(!site.join("releases/4.0.0").exists(), "the failed release is removed");
    let r = run(Command::new(INSTALL).args(["check", "--json", "--root"]).arg(&site));
    r.expect_ok();
}

/// Issue 13 item 1: the site's only key revoked, then named again with `--trust`: `plan`, `apply`
/// and `verify --root` all refuse with `revoked_key` (before, the empty trust store made `--trust`
/// a first-install key and the revoked key installed 4.0.0). Nothing on the site changes.
#[test]
fn trust_only_key_revoked_then_named_with_trust_flag() {
    let e = env();
    let tmp = tempfile::tempdir_in(scratch_dir("hostile-trust")).unwrap();
    let site = tmp.path().join("site");
    copy_site(base_site(), &site);
    trust_cmd(&site, &["revoke", &e.signer.key_id]);
    let before = snapshot_ignoring_lock(tmp.path());
    let py = site_python();
    let with_trust = |cmd: &str| {
        let mut c = Command::new(INSTALL);
        c.arg(cmd).arg(&e.real).arg("--root").arg(&site).arg("--trust").arg(&e.signer.public_path).arg("--json");
        if cmd == "apply" {
            c.arg("--python").arg(py);
        }
        run(&mut c)
    };
    for cmd in ["plan", "apply", "verify"] {
        let r = with_trust(cmd);
        assert_eq!((r.code, r.error_kind().as_deref()), (Some(3), Some("revoked_key")), "{cmd} --trust REVOKED:\n{r}");
        assert!(r.stdout.contains(&e.signer.key_id), "{cmd}: the message names the key:\n{r}");
    }
    // Without --trust: no trusted key left, and the hint no longer suggests --trust.
    let r = run(Command::new(INSTALL)
        .arg("apply")
        .arg(&e.real)
        .arg("--root")
        .arg(&site)
        .arg("--python")
        .arg(py)
        .arg("--json"));
    assert_eq!((r.code, r.error_kind().as_deref()), (Some(2), Some("no_trusted_keys")), "{r}");
    assert!(r.stdout.contains("trust add"), "{r}");
    let diff = diff_snapshots(&before, &snapshot_ignoring_lock(tmp.path()));
    assert!(diff.is_empty(), "refusing a revoked key changed the site:\n{}", diff.join("\n"));
    assert_eq!(std::fs::read_link(site.join("current")).unwrap(), Path::new("releases/1.0.0"));
}

/// Issue 13 item 5: a key dropped into `trust/` under a name other than its key id (`evil.pub`) is
/// not trusted quietly: reading the store fails (`trust_store`) naming the file.
#[test]
fn trust_key_under_another_name_is_refused() {
    let e = env();
    let tmp = tempfile::tempdir_in(scratch_dir("hostile-trust")).unwrap();
    let site = tmp.path().join("site");
    copy_site(base_site(), &site);
    std::fs::copy(&e.stranger.public_path, site.join("trust/evil.pub")).unwrap();
    let r = run(Command::new(INSTALL).arg("verify").arg(&e.real).arg("--root").arg(&site).arg("--json"));
    assert_eq!((r.code, r.error_kind().as_deref()), (Some(2), Some("trust_store")), "{r}");
    assert!(r.stdout.contains("evil.pub") && r.stdout.contains(&e.stranger.key_id), "{r}");
    let r = run(Command::new(INSTALL)
        .arg("apply")
        .arg(&e.real)
        .arg("--root")
        .arg(&site)
        .arg("--python")
        .arg(site_python())
        .arg("--json"));
    assert_eq!((r.code, r.error_kind().as_deref()), (Some(2), Some("trust_store")), "{r}");
    std::fs::rename(site.join("trust/evil.pub"), site.join(format!("trust/{}.pub", e.stranger.key_id))).unwrap();
    run(Command::new(INSTALL).arg("verify").arg(&e.real).arg("--root").arg(&site).arg("--json")).expect_ok();
}

/// Issue 13 item 8: `trust add` of a revoked key is refused (exit 4, `revoked_key`, naming it) and
/// the key stays revoked; `trust unrevoke` is the explicit way back.
#[test]
fn trust_add_of_a_revoked_key_is_refused_until_unrevoked() {
    let k = revoked_key();
    let tmp = tempfile::tempdir_in(scratch_dir("hostile-trust")).unwrap();
    let site = tmp.path().join("site");
    copy_site(base_site(), &site);
    revoke_on(&site);
    let before = snapshot_ignoring_lock(tmp.path());
    let trust =
        |args: &[&str]| run(Command::new(INSTALL).arg("trust").args(args).arg("--root").arg(&site).arg("--json"));
    let r = trust(&["add", k.public_path.to_str().unwrap()]);
    assert_eq!((r.code, r.error_kind().as_deref()), (Some(4), Some("revoked_key")), "{r}");
    assert!(r.stdout.contains(&k.key_id), "{r}");
    let diff = diff_snapshots(&before, &snapshot_ignoring_lock(tmp.path()));
    assert!(diff.is_empty(), "a refused trust add changed the site:\n{}", diff.join("\n"));
    let list = trust(&["list"]);
    list.expect_ok();
    assert!(list.json()["revoked"].as_array().unwrap().iter().any(|v| v == k.key_id.as_str()), "{list}");
    assert!(!list.json()["trusted"].as_array().unwrap().iter().any(|v| v == k.key_id.as_str()), "{list}");

    let r = trust(&["unrevoke", &k.key_id]);
    r.expect_ok();
    assert_eq!(r.json()["unrevoked"], k.key_id.as_str(), "{r}");
    let list = trust(&["list"]);
    assert!(list.json()["trusted"].as_array().unwrap().iter().any(|v| v == k.key_id.as_str()), "{list}");
    assert!(list.json()["revoked"].as_array().unwrap().is_empty(), "{list}");
    let r = trust(&["unrevoke", &k.key_id]);
    assert_eq!((r.code, r.error_kind().as_deref()), (Some(2), Some("unknown_key")), "{r}");
}

#[test]
fn trust_cli_key_the_site_does_not_trust() {
    let e = env();
    let s = Scenario::new("untrusted_cli_key", Input::Bytes(e.parts.bundle().to_bytes()))
        .apply_args(&["--trust", e.stranger.public_path.to_str().unwrap()])
        .run(Where::SiteApply, Expect::err(2, "untrusted_cli_key", &[&e.stranger.key_id]));
    run_scenario(s);
}

#[test]
fn trust_add_refuses_a_small_order_key() {
    let e = env();
    let tmp = tempfile::tempdir_in(scratch_dir("hostile-trust")).unwrap();
    let site = tmp.path().join("site");
    copy_site(base_site(), &site);
    let before = snapshot_ignoring_lock(tmp.path());
    let r = run(Command::new(INSTALL).args(["trust", "add", "--json", "--root"]).arg(&site).arg(&e.weak_pub));
    assert_eq!(r.code, Some(2), "{r}");
    assert_eq!(r.error_kind().as_deref(), Some("malformed_key"), "{r}");
    let diff = diff_snapshots(&before, &snapshot_ignoring_lock(tmp.path()));
    assert!(diff.is_empty(), "trust add of a weak key changed the site:\n{}", diff.join("\n"));
}

/// Rotation: a second key trusted beside the first; bundles of either verify; once the old key is
/// revoked, its bundles are refused and the new key's still pass.
#[test]
fn trust_rotation_with_two_keys() {
    let e = env();
    let tmp = tempfile::tempdir_in(scratch_dir("hostile-trust")).unwrap();
    let site = tmp.path().join("site");
    copy_site(base_site(), &site);
    trust_cmd(&site, &["add", e.stranger.public_path.to_str().unwrap()]);
    let r = run(Command::new(INSTALL).args(["trust", "list", "--json", "--root"]).arg(&site));
    r.expect_ok();
    let trusted: Vec<String> =
        r.json()["trusted"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert!(trusted.contains(&e.signer.key_id) && trusted.contains(&e.stranger.key_id), "{r}");

    let new_signed = tmp.path().join("new.bundle.tar.gz");
    std::fs::write(&new_signed, resigned(&parts4(), Some(&e.stranger.secret()), |_| {})).unwrap();
    let verify = |b: &Path| run(Command::new(INSTALL).arg("verify").arg(b).arg("--root").arg(&site).arg("--json"));
    verify(&e.real).expect_ok();
    verify(&new_signed).expect_ok();
    trust_cmd(&site, &["revoke", &e.signer.key_id]);
    let r = verify(&e.real);
    assert_eq!((r.code, r.error_kind().as_deref()), (Some(3), Some("revoked_key")), "{r}");
    verify(&new_signed).expect_ok();
    let r = run(Command::new(INSTALL)
        .arg("apply")
        .arg(&new_signed)
        .arg("--root")
        .arg(&site)
        .arg("--python")
        .arg(site_python())
        .arg("--json"));
    assert_eq!(r.code, Some(0), "a bundle signed by the rotated-in key must install:\n{r}");
    assert_eq!(std::fs::read_link(site.join("current")).unwrap(), Path::new("releases/4.0.0"));
}

// ---------------------------------------------------------------------------------------------
// The bundle path.

#[test]
fn bundle_is_a_character_device() {
    let s = Scenario::new("char_device", Input::Nothing);
    let s = Scenario {
        place: Box::new(|p| {
            std::os::unix::fs::symlink("/dev/zero", p).unwrap();
            None
        }),
        timeout: Duration::from_secs(10),
        ..s
    };
    let e = Expect::err(3, "bundle_not_regular_file", &[]);
    run_scenario(
        s.run(Where::SiteApply, e.clone())
            .run(Where::FreshApply, e.clone())
            .run(Where::SiteVerify, e.clone())
            .run(Where::KeyVerify, e),
    );
}

#[test]
fn control_the_reassembled_bundle_installs() {
    // The crafting tools themselves: the real bundle taken apart and put back together installs,
    // so every catalogue case fails for its own defect.
    let e = env();
    let tmp = tempfile::tempdir_in(scratch_dir("hostile-control")).unwrap();
    let site = tmp.path().join("site");
    copy_site(base_site(), &site);
    let b = tmp.path().join("re.bundle.tar.gz");
    e.parts.bundle().write(&b);
    let r = run(Command::new(INSTALL)
        .arg("apply")
        .arg(&b)
        .arg("--root")
        .arg(&site)
        .arg("--python")
        .arg(site_python())
        .arg("--json"));
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(std::fs::read_link(site.join("current")).unwrap(), Path::new("releases/4.0.0"));
    let fresh = tmp.path().join("fresh/root");
    let r = run(Command::new(INSTALL)
        .arg("apply")
        .arg(&b)
        .arg("--root")
        .arg(&fresh)
        .arg("--trust")
        .arg(&e.signer.public_path)
        .arg("--python")
        .arg(site_python())
        .arg("--json"));
    assert_eq!(r.code, Some(0), "{r}");
}

/// The bundle file is replaced by another validly signed bundle of the same release after the
/// signed head was read for planning and before the payload is streamed (the interpreter probe
/// runs in between; a wrapper does the swap). Installing must not mix the two.
#[test]
fn bundle_swapped_between_planning_and_staging() {
    let e = env();
    let tmp = tempfile::tempdir_in(scratch_dir("hostile-swap")).unwrap();
    let t = tmp.path();
    let site = t.join("site");
    copy_site(base_site(), &site);
    make_sentinel(&t.join("sentinel"));
    let input = t.join("in");
    std::fs::create_dir(&input).unwrap();
    let bundle = input.join("fieldlog.bundle.tar.gz");
    std::fs::copy(&e.real, &bundle).unwrap();
    // Same payload, another manifest (keep_releases 4): valid, signed, a different bundle id.
    let other = t.join("other.bundle.tar.gz");
    std::fs::write(&other, resigned(&parts4(), None, |m| m.keep_releases = 4)).unwrap();
    let wrapper = t.join("python-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncp '{}' '{}'\nexec '{}' \"$@\"\n",
            other.display(),
            bundle.display(),
            site_python().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let before_site = snapshot_ignoring_lock(&site);
    let before_sentinel = snapshot(&t.join("sentinel"));
    let r = run(Command::new(INSTALL)
        .arg("apply")
        .arg(&bundle)
        .arg("--root")
        .arg(&site)
        .arg("--python")
        .arg(&wrapper)
        .arg("--json"));
    assert_eq!(
        std::fs::read(&bundle).unwrap(),
        std::fs::read(&other).unwrap(),
        "the wrapper did not swap the bundle: the test is void\n{r}"
    );
    assert_eq!((r.code, r.error_kind().as_deref()), (Some(3), Some("bundle_changed")), "{r}");
    let diff = diff_snapshots(&before_site, &snapshot_ignoring_lock(&site));
    assert!(diff.is_empty(), "the site changed:\n{}", diff.join("\n"));
    assert!(diff_snapshots(&before_sentinel, &snapshot(&t.join("sentinel"))).is_empty());
}

/// The bundle's own `pre_apply` hook destroys the bundle file (its path in `HOSTILE_BUNDLE`):
/// the apply still succeeds and installs exactly the verified bytes, because the bundle file is
/// never read again after verification.
#[test]
fn installed_bytes_are_the_verified_bytes() {
    let e = env();
    let tmp = tempfile::tempdir_in(scratch_dir("hostile-reread")).unwrap();
    let t = tmp.path();
    let spec_dir = t.join("spec");
    copy_spec("4.0.0", &spec_dir);
    let hook = spec_dir.join("hooks/stop.sh");
    let text = std::fs::read_to_string(&hook).unwrap();
    let text = text.replacen(
        "set -eu\n",
        "set -eu\nif [ -n \"${HOSTILE_BUNDLE:-}\" ]; then head -c 4096 /dev/urandom > \"$HOSTILE_BUNDLE\"; fi\n",
        1,
    );
    std::fs::write(&hook, text).unwrap();
    let r = run(Command::new(test_support::bin("bundle-build"))
        .arg("build")
        .arg(spec_dir.join("spec.yaml"))
        .arg("--key")
        .arg(&e.signer.secret_path)
        .arg("--out")
        .arg(t.join("out"))
        .arg("--json")
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    r.expect_ok();
    let built = PathBuf::from(r.json()["bundle"].as_str().unwrap());
    let bundle = t.join("clobbered.bundle.tar.gz");
    std::fs::copy(&built, &bundle).unwrap();
    let parts = Parts::read(&built);
    let manifest = parts.parsed();

    let site = t.join("site");
    copy_site(base_site(), &site);
    let r = run(Command::new(INSTALL)
        .arg("apply")
        .arg(&bundle)
        .arg("--root")
        .arg(&site)
        .arg("--python")
        .arg(site_python())
        .arg("--json")
        .env("HOSTILE_BUNDLE", &bundle));
    assert_ne!(
        std::fs::read(&bundle).unwrap(),
        std::fs::read(&built).unwrap(),
        "the hook did not clobber the bundle: the test is void\n{r}"
    );
    assert_eq!(r.code, Some(0), "the bundle file was read again after verification:\n{r}");
    let staged = site.join("releases/4.0.0/bundle");
    assert_eq!(std::fs::read(staged.join("manifest.yaml")).unwrap(), parts.manifest);
    for f in &manifest.files {
        let data = std::fs::read(staged.join(&f.path)).unwrap_or_else(|err| panic!("{}: {err}", f.path));
        assert_eq!(bundle_core::hash::sha256_hex(&data), f.sha256, "{} differs from what was verified", f.path);
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(staged.join(&f.path)).unwrap().permissions())
                & 0o7777;
        // Wheels are links to the site's store, whose files are read-only.
        let want = if manifest.wheels.contains(&f.path) { f.mode_bits() & !0o222 } else { f.mode_bits() };
        assert_eq!(mode, want, "{} has mode {mode:o}", f.path);
    }
}

// ---------------------------------------------------------------------------------------------
// Planted symlinks: never written through.

#[derive(Clone, Copy)]
enum Target {
    /// An empty directory (a sentinel file inside).
    Dir,
    /// A copy of the site file the link replaces (so the installer finds what it expects there).
    CopyOf,
    /// A small unrelated file.
    File,
}

/// Plants `rel` (replacing what is there) as an absolute symlink to a sentinel outside the site,
/// applies 4.0.0 and checks: apply fails cleanly (exit 1, 2 or 4, one-line JSON error naming the
/// path), the sentinel is byte-for-byte as before, and the site is exactly as before.
fn planted(rel: &str, target: Target) {
    let e = env();
    let tmp = tempfile::tempdir_in(scratch_dir("hostile-planted")).unwrap();
    let t = tmp.path();
    let site = t.join("site");
    copy_site(base_site(), &site);
    let elsewhere = t.join("elsewhere");
    make_sentinel(&elsewhere);
    let link = site.join(rel);
    let dest = match target {
        Target::Dir => {
            let d = elsewhere.join("dir");
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("precious.txt"), "outside the site\n").unwrap();
            d
        }
        Target::CopyOf => {
            let f = elsewhere.join(link.file_name().unwrap());
            std::fs::copy(&link, &f).unwrap_or_else(|err| panic!("{}: {err}", link.display()));
            f
        }
        Target::File => {
            let f = elsewhere.join("file");
            std::fs::write(&f, "outside the site\n").unwrap();
            f
        }
    };
    if let Ok(m) = link.symlink_metadata() {
        if m.is_dir() {
            std::fs::remove_dir_all(&link).unwrap();
        } else {
            std::fs::remove_file(&link).unwrap();
        }
    }
    std::os::unix::fs::symlink(&dest, &link).unwrap();
    let before_site = snapshot_ignoring_lock(&site);
    let before_elsewhere = snapshot(&elsewhere);
    let r = run(Command::new(INSTALL)
        .arg("apply")
        .arg(&e.real)
        .arg("--root")
        .arg(&site)
        .arg("--python")
        .arg(site_python())
        .arg("--json"));

    let mut problems = Vec::new();
    let diff = diff_snapshots(&before_elsewhere, &snapshot(&elsewhere));
    if !diff.is_empty() {
        problems.push(format!("WRITTEN THROUGH the planted symlink {rel} -> {}:\n{}", dest.display(), diff.join("\n")));
    }
    if !matches!(r.code, Some(1 | 2 | 4)) || r.panicked() {
        problems.push(format!(
            "apply should fail cleanly (exit 1, 2 or 4) on a site with {rel} planted as a symlink, got {:?}",
            r.code
        ));
    } else {
        let message = r.json()["error"]["message"].as_str().unwrap_or_default().to_string();
        let last = Path::new(rel).file_name().unwrap().to_string_lossy().into_owned();
        if !message.contains(&last) {
            problems.push(format!("the error should name the planted path `{rel}`: {message:?}"));
        }
    }
    let diff = diff_snapshots(&before_site, &snapshot_ignoring_lock(&site));
    if !diff.is_empty() {
        let shown: Vec<&String> = diff
            .iter()
            .filter(|d| !d.starts_with("+ releases/4.0.0/") && !d.starts_with("+ backups/"))
            .take(12)
            .collect();
        problems.push(format!(
            "the site changed ({} differences, first ones):\n{}",
            diff.len(),
            shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
        ));
    }
    let mut shown = r.clone();
    shown.stdout.truncate(600);
    assert!(problems.is_empty(), "planted {rel}:\n{}\n{shown}", problems.join("\n"));
}

#[test]
fn planted_release_dir_of_the_new_version() {
    planted("releases/4.0.0", Target::Dir);
}

#[test]
fn planted_data_dir() {
    planted("data", Target::Dir);
}

#[test]
fn planted_staging_dir() {
    planted("state/staging", Target::Dir);
}

#[test]
fn planted_backups_dir() {
    planted("backups", Target::Dir);
}

#[test]
fn planted_client_db() {
    planted("data/client.db", Target::CopyOf);
}

#[test]
fn planted_metadata_db() {
    planted("data/metadata.db", Target::CopyOf);
}

#[test]
fn planted_releases_dir() {
    planted("releases", Target::Dir);
}

#[test]
fn planted_trust_dir() {
    planted("trust", Target::Dir);
}

#[test]
fn planted_lock_file() {
    planted("state/lock", Target::File);
}

#[test]
fn planted_history_file() {
    planted("state/history.jsonl", Target::CopyOf);
}

#[test]
fn planted_site_state_file() {
    planted("state/site.json", Target::CopyOf);
}

/// Issue 13 item 5: a first install under `umask 000` creates nothing group- or world-writable
/// (before: `trust/`, `state/`, `releases/<v>/` and the venv were 0777, so any local user could drop
/// a key into `trust/`), `backups/` is 0700; and a site whose `trust/` or `state/` is writable by
/// others or owned by another user is refused by every command that trusts them.
#[test]
fn umask_000_install_has_fixed_modes_and_open_dirs_are_refused() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let e = env();
    let tmp = tempfile::tempdir_in(scratch_dir("hostile-umask")).unwrap();
    let site = tmp.path().join("site");
    let r = run(Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(INSTALL)
        .arg("apply")
        .arg(e.bundle("1.0.0"))
        .arg("--root")
        .arg(&site)
        .arg("--trust")
        .arg(&e.signer.public_path)
        .arg("--python")
        .arg(site_python())
        .arg("--json"));
    assert_eq!(r.code, Some(0), "{r}");
    let mut open = Vec::new();
    for entry in walkdir::WalkDir::new(&site).into_iter().flatten() {
        let m = entry.path().symlink_metadata().unwrap();
        if !m.file_type().is_symlink() && m.mode() & 0o022 != 0 {
            open.push(format!("{} {:o}", entry.path().display(), m.mode() & 0o7777));
        }
    }
    assert!(open.is_empty(), "writable by group or others after an install under umask 000:\n{}", open.join("\n"));
    let mode = |p: &str| std::fs::metadata(site.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("backups"), 0o700);
    assert_eq!(mode("trust"), 0o755);
    assert_eq!(mode("state"), 0o755);

    let status = |args: &[&str]| run(Command::new(INSTALL).args(args).arg("--root").arg(&site).arg("--json"));
    let owner = std::fs::metadata(&site).unwrap().uid();
    for (dir, how) in [("trust", "chmod"), ("state", "chmod"), ("trust", "chown"), ("state", "chown")] {
        let p = site.join(dir);
        if how == "chmod" {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        } else if let Err(err) = std::os::unix::fs::chown(&p, Some(owner + 1), None) {
            eprintln!("skipping the {dir}/ owned-by-another-user case: chown needs root ({err})");
            continue;
        }
        let commands: &[&[&str]] = if dir == "trust" {
            &[&["status"], &["trust", "list"], &["check"]]
        } else {
            &[&["status"], &["check"], &["history"]]
        };
        for args in commands {
            let r = status(args);
            let kind = r.error_kind();
            assert!(
                r.code != Some(0) && matches!(kind.as_deref(), Some("unsafe_permissions") | Some("trust_store")),
                "{args:?} with {dir}/ {how}ed must be refused:\n{r}"
            );
            assert!(r.stdout.contains(dir), "{r}");
        }
        let v = run(Command::new(INSTALL).arg("verify").arg(&e.real).arg("--root").arg(&site).arg("--json"));
        if dir == "trust" {
            assert_eq!((v.code, v.error_kind().as_deref()), (Some(2), Some("trust_store")), "{v}");
        }
        let a = run(Command::new(INSTALL)
            .arg("apply")
            .arg(&e.real)
            .arg("--root")
            .arg(&site)
            .arg("--python")
            .arg(site_python())
            .arg("--json"));
        assert_eq!((a.code, a.error_kind().as_deref()), (Some(4), Some("unsafe_permissions")), "{a}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&p, Some(owner), None).unwrap();
        status(&["status"]).expect_ok();
    }
    assert_eq!(std::fs::read_link(site.join("current")).unwrap(), Path::new("releases/1.0.0"));
}

/// Issue 13 item 4: backups hold every row: `backups/` 0700 (tightened on a site that had it open),
/// each backup directory 0700 and every file in it 0600, even under `umask 000`; the live databases
/// keep their modes.
#[test]
fn backups_are_private() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let e = env();
    let tmp = tempfile::tempdir_in(scratch_dir("hostile-backups")).unwrap();
    let site = tmp.path().join("site");
    copy_site(base_site(), &site);
    std::fs::set_permissions(site.join("backups"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let live_mode = |p: &str| std::fs::metadata(site.join(p)).unwrap().mode() & 0o7777;
    let before = live_mode("data/client.db");
    let r = run(Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(INSTALL)
        .arg("apply")
        .arg(&e.real)
        .arg("--root")
        .arg(&site)
        .arg("--python")
        .arg(site_python())
        .arg("--json"));
    assert_eq!(r.code, Some(0), "{r}");
    assert_eq!(live_mode("backups"), 0o700);
    let mut files = 0;
    for entry in walkdir::WalkDir::new(site.join("backups")).min_depth(1).into_iter().flatten() {
        let m = entry.path().symlink_metadata().unwrap();
        let want = if m.is_dir() { 0o700 } else { 0o600 };
        assert!(!m.file_type().is_symlink(), "{}", entry.path().display());
        assert_eq!(m.mode() & 0o7777, want, "{}", entry.path().display());
        files += m.is_file() as usize;
    }
    assert!(files >= 3, "the backups hold the databases, the config and record.json ({files} files)");
    assert_eq!(live_mode("data/client.db"), before, "the live database keeps its mode");
}

/// A root-only SQLite database outside the site holding `marker`, and its sha256.
fn foreign_db(dir: &Path, marker: &str) -> (PathBuf, String) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join("secret.db");
    let c = rusqlite::Connection::open(&p).unwrap();
    c.execute_batch(&format!("CREATE TABLE secrets (v TEXT); INSERT INTO secrets VALUES ('{marker}');")).unwrap();
    drop(c);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sha = bundle_core::hash::sha256_hex(&std::fs::read(&p).unwrap());
    (p, sha)
}

/// No file under `dir` holds `marker` (a backup of the foreign database would).
fn nowhere_under(dir: &Path, marker: &str) -> Result<(), String> {
    for e in walkdir::WalkDir::new(dir).into_iter().flatten().filter(|e| e.file_type().is_file()) {
        if std::fs::read(e.path()).is_ok_and(|b| b.windows(marker.len()).any(|w| w == marker.as_bytes())) {
            return Err(format!("{} holds rows of the foreign database", e.path().display()));
        }
    }
    Ok(())
}

/// Issue 13 item 2, nested path: a bundle whose SQLite database lives at `data/sub/inner/client.db`,
/// on a site where the app's user made `data/sub/inner` a link to a directory holding a root-only
/// database.
/// The link was never checked (only the top of each directory was): root migrated the foreign
/// database. Now the directory is opened without following links and apply refuses.
#[test]
fn nested_database_directory_link_is_never_followed() {
    let tmp = tempfile::tempdir_in(scratch_dir("hostile-nested")).unwrap();
    let site = tmp.path().join("site");
    copy_site(base_site(), &site);
    let marker = "FOREIGN-ROW-nested-7c1";
    let (secret, sha) = foreign_db(&tmp.path().join("foreign"), marker);
    std::fs::rename(&secret, tmp.path().join("foreign/client.db")).unwrap();
    let secret = tmp.path().join("foreign/client.db");
    // `data/sub` is a real directory; the link is one level further down, where the start-of-run
    // check (the top of each layout directory) never looked.
    std::fs::create_dir(site.join("data/sub")).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("foreign"), site.join("data/sub/inner")).unwrap();
    let bundle = tmp.path().join("nested.bundle.tar.gz");
    std::fs::write(
        &bundle,
        resigned(&parts4(), None, |m| {
            m.databases.iter_mut().find(|d| d.name == "client").unwrap().path = "data/sub/inner/client.db".into()
        }),
    )
    .unwrap();
    for cmd in ["plan", "apply"] {
        let mut c = Command::new(INSTALL);
        c.arg(cmd).arg(&bundle).arg("--root").arg(&site).arg("--json");
        if cmd == "apply" {
            c.arg("--python").arg(site_python());
        }
        let r = run(&mut c);
        assert!(matches!(r.code, Some(1 | 2 | 4)) && !r.panicked(), "{cmd} must refuse:\n{r}");
        assert!(r.stdout.contains("link"), "{cmd}: the error says why:\n{r}");
    }
    assert_eq!(
        bundle_core::hash::sha256_hex(&std::fs::read(&secret).unwrap()),
        sha,
        "the foreign database was changed"
    );
    nowhere_under(&site, marker).unwrap();
    assert_eq!(std::fs::read_link(site.join("current")).unwrap(), Path::new("releases/1.0.0"));
}

/// Issue 13 item 2, the race: `data/` belongs to the app's user, who swaps `data/client.db` for a
/// link to a root-only database while an apply runs. A helper (this test, driven by the
/// `BUNDLE_INSTALL_TEST_PAUSE` fault hook) makes the swap at one step boundary per run, for every
/// boundary of a real 1.0.0 → 4.0.0 upgrade. Whatever the run then does (finish, fail, or stop for
/// attention), the foreign database is never changed and no file of the site ever holds its rows.
#[test]
fn database_swapped_for_a_link_at_any_step_boundary() {
    let e = env();
    let marker = "FOREIGN-ROW-race-4b2";
    let apply = |site: &Path, pause: &Path, mut at_boundary: Box<dyn FnMut(&str) + '_>| {
        let mut child = Command::new(INSTALL)
            .arg("apply")
            .arg(&e.real)
            .arg("--root")
            .arg(site)
            .arg("--python")
            .arg(site_python())
            .arg("--json")
            .env("BUNDLE_INSTALL_TEST_PAUSE", pause)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        loop {
            if let Ok(point) = std::fs::read_to_string(pause.join("at")) {
                std::fs::remove_file(pause.join("at")).unwrap();
                at_boundary(&point);
                std::fs::write(pause.join("go"), b"").unwrap();
            }
            if let Some(status) = child.try_wait().unwrap() {
                let out = child.wait_with_output().unwrap();
                return (status.code(), String::from_utf8_lossy(&out.stdout).into_owned());
            }
            assert!(std::time::Instant::now() < deadline, "apply hung");
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    // The boundaries of an undisturbed run.
    let tmp = tempfile::tempdir_in(scratch_dir("hostile-race")).unwrap();
    let site = tmp.path().join("site");
    copy_site(base_site(), &site);
    let pause = tmp.path().join("pause");
    std::fs::create_dir(&pause).unwrap();
    let mut points = Vec::new();
    let (code, out) = apply(&site, &pause, Box::new(|p| points.push(p.to_string())));
    assert_eq!(code, Some(0), "{out}");
    let points: Vec<String> = points.into_iter().filter(|p| p.ends_with(":before")).collect();
    assert!(points.len() >= 5, "{points:?}");

    let mut problems = Vec::new();
    for point in &points {
        let tmp = tempfile::tempdir_in(scratch_dir("hostile-race")).unwrap();
        let site = tmp.path().join("site");
        copy_site(base_site(), &site);
        let pause = tmp.path().join("pause");
        std::fs::create_dir(&pause).unwrap();
        let (secret, sha) = foreign_db(&tmp.path().join("foreign"), marker);
        let live = site.join("data/client.db");
        let (code, out) = apply(
            &site,
            &pause,
            Box::new(|p| {
                if p == point {
                    std::fs::rename(&live, site.join("data/client.db.moved")).unwrap();
                    std::os::unix::fs::symlink(&secret, &live).unwrap();
                }
            }),
        );
        if bundle_core::hash::sha256_hex(&std::fs::read(&secret).unwrap()) != sha {
            problems.push(format!("swap at {point}: the foreign database was changed (exit {code:?})"));
        }
        if let Err(e) = nowhere_under(&site, marker) {
            problems.push(format!("swap at {point}: {e} (exit {code:?})"));
        }
        if out.contains("panicked") || code.is_none() {
            problems.push(format!("swap at {point}: crashed: {out}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A first install that fails, into a root whose parent directories do not exist either: nothing
/// may be left behind, not even the parents it had to create.
#[test]
fn failed_first_install_leaves_no_parent_directories() {
    let e = env();
    let tmp = tempfile::tempdir_in(scratch_dir("hostile-fresh")).unwrap();
    let bundle = tmp.path().join("bad.bundle.tar.gz");
    std::fs::write(&bundle, [std::fs::read(&e.real).unwrap(), b"tail".to_vec()].concat()).unwrap();
    let fresh = tmp.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    let root = fresh.join("a/b/root");
    let r = run(Command::new(INSTALL)
        .arg("apply")
        .arg(&bundle)
        .arg("--root")
        .arg(&root)
        .arg("--trust")
        .arg(&e.signer.public_path)
        .arg("--python")
        .arg(site_python())
        .arg("--json"));
    assert_eq!((r.code, r.error_kind().as_deref()), (Some(3), Some("trailing_data")), "{r}");
    let left = snapshot(&fresh);
    assert!(
        left.is_empty(),
        "a failed first install into {} left behind: {:?}",
        root.display(),
        left.keys().collect::<Vec<_>>()
    );
}

/// Not a symlink: a real, non-empty `releases/4.0.0/` that is not a complete release (someone's
/// files, a copy in progress). Apply must refuse without deleting it.
#[test]
fn preexisting_release_dir_is_not_deleted() {
    let e = env();
    let tmp = tempfile::tempdir_in(scratch_dir("hostile-planted")).unwrap();
    let site = tmp.path().join("site");
    copy_site(base_site(), &site);
    std::fs::create_dir(site.join("releases/4.0.0")).unwrap();
    std::fs::write(site.join("releases/4.0.0/precious.txt"), "not the installer's\n").unwrap();
    let before = snapshot_ignoring_lock(&site);
    let r = run(Command::new(INSTALL)
        .arg("apply")
        .arg(&e.real)
        .arg("--root")
        .arg(&site)
        .arg("--python")
        .arg(site_python())
        .arg("--json"));
    let diff = diff_snapshots(&before, &snapshot_ignoring_lock(&site));
    assert!(
        matches!(r.code, Some(1 | 4)) && diff.is_empty(),
        "apply over a pre-existing releases/4.0.0/ must fail and leave it alone; exit {:?}, changes:\n{}\n{r}",
        r.code,
        diff.join("\n")
    );
}

#[test]
fn planted_store_dir() {
    planted("store", Target::Dir);
}

#[test]
fn planted_store_wheels_dir() {
    planted("store/wheels", Target::Dir);
}

/// A store entry the next release would link from, replaced by a link to elsewhere.
#[test]
fn planted_store_entry() {
    let wheels = base_site().join("store/wheels");
    let entry = std::fs::read_dir(&wheels)
        .unwrap()
        .flatten()
        .find(|e| {
            std::fs::read_to_string(e.path().join("entry.json")).unwrap_or_default().contains("\"wheel\": \"fieldkit-")
        })
        .expect("the base site's store holds fieldkit");
    planted(&format!("store/wheels/{}", entry.file_name().to_string_lossy()), Target::Dir);
}

// ---------------------------------------------------------------------------------------------
// Delta bundles: a validly signed manifest that leaves files out of the archive.

/// 4.0.0 as a delta whose archive leaves out `omitted` (and, to be hostile, also `also_missing`).
fn delta_of_4(omitted: &[&str], also_missing: &[&str]) -> Vec<u8> {
    let mut p = parts4();
    let mut m = p.parsed();
    let mut list: Vec<String> = omitted.iter().map(|s| s.to_string()).collect();
    list.sort();
    m.base = Some(bundle_core::manifest::Base {
        app: m.app.clone(),
        version: "3.0.0".into(),
        bundle_id: bundle_core::hash::sha256_hex(b"a base this site never saw"),
        omitted: list,
    });
    p.set_manifest(&m, &env().key());
    p.files.retain(|f| !omitted.contains(&f.path.as_str()) && !also_missing.contains(&f.path.as_str()));
    p.bundle().to_bytes()
}

fn wheel_path(parts: &Parts, prefix: &str) -> String {
    parts.files.iter().find(|f| f.path.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix}*")).path.clone()
}

/// The site (on 1.0.0) has no file with the app wheel's sha256: refused before any change, naming
/// the file and the base; verification alone passes (the manifest says the file is omitted).
#[test]
fn delta_whose_omitted_file_the_site_lacks() {
    let app = wheel_path(&parts4(), "wheels/fieldlog-");
    let b = delta_of_4(&[&app], &[]);
    run_scenario(
        Scenario::new("delta_base_missing", Input::Bytes(b))
            .run(Where::SiteApply, Expect::err(4, "delta_base_missing", &["fieldlog-4.0.0", "3.0.0"]))
            .run(Where::FreshApply, Expect::err(4, "delta_base_missing", &["fieldlog-4.0.0"]))
            .run(Where::SiteVerify, Expect::ok())
            .run(Where::KeyVerify, Expect::ok()),
    );
}

/// Leaving out a file the manifest does not declare omitted is still `missing_entry`, even when
/// every declared one is on the site (fieldkit is in its store).
#[test]
fn delta_whose_archive_lacks_an_undeclared_file() {
    let kit = wheel_path(&parts4(), "wheels/fieldkit-");
    let b = delta_of_4(&[&kit], &["hooks/health.sh"]);
    run_scenario(
        Scenario::new("delta_missing_entry", Input::Bytes(b))
            .run(Where::SiteApply, Expect::err(3, "missing_entry", &[]))
            .run(Where::FreshApply, Expect::err(4, "delta_base_missing", &["fieldkit"]))
            .run(Where::SiteVerify, Expect::err(3, "missing_entry", &[]))
            .run(Where::KeyVerify, Expect::err(3, "missing_entry", &[])),
    );
}
