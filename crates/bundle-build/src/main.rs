//! The `bundle-build` command line: parses arguments, calls the library, and reports the result once
//! (human lines on stderr/stdout, or one JSON object on stdout with `--json`), with the exit codes of
//! `bundle-spec/exit-codes.md`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bundle_build::password::{self, KeyOpenError, PasswordError, PasswordSource};
use bundle_build::release::{self, Level, Lint};
use bundle_build::spec::LoadedSpec;
use bundle_build::{build, check};
use bundle_core::exit::Exit;
use bundle_core::report::{envelope, verified_fields, Failure};
use bundle_core::signature::{PublicKey, SecretKey, Signature, SignatureError};
use bundle_core::verify::{self, Limits, VerifyError};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(name = "bundle-build", version, about = "Build, sign, check and verify offline update bundles")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a signing key pair: PREFIX.key (mode 0600, encrypted with a password as `minisign -G`
    /// does) and PREFIX.pub. Never overwrites.
    Keygen {
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
        /// Write the secret key in clear (as `minisign -G -W`), without a password.
        #[arg(long, conflicts_with_all = ["password_fd", "password_env"])]
        unencrypted: bool,
        #[command(flatten)]
        password: PasswordOpts,
        #[arg(long)]
        json: bool,
    },
    /// Build and sign DIR/<app>-<version>.bundle.tar.gz from a spec (or, with --unsigned, write it
    /// unsigned with its manifest beside it, for `sign`).
    Build {
        spec: PathBuf,
        #[arg(long, value_name = "PREFIX.key", required_unless_present = "unsigned")]
        key: Option<PathBuf>,
        /// Write DIR/<app>-<version>.unsigned.tar.gz and DIR/<app>-<version>.manifest.yaml (the file
        /// to sign) instead of a signed bundle; finish with `bundle-build sign`.
        #[arg(long, conflicts_with_all = ["key", "split_size", "password_fd", "password_env"])]
        unsigned: bool,
        #[command(flatten)]
        password: PasswordOpts,
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// Write the bundle as parts of at most SIZE bytes (suffixes K, M, G: e.g. 4000M for FAT32),
        /// plus a signed NAME.parts index; `cat` of the parts gives the ordinary bundle.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        split_size: Option<u64>,
        /// Build a delta bundle against this earlier bundle of the app: the manifest still lists
        /// and signs every file, but the archive leaves out each file the base carries with the
        /// same sha256. The base's signature is checked first (with --base-trust, or the public
        /// half of --key).
        #[arg(long, value_name = "OLD.bundle.tar.gz")]
        base: Option<PathBuf>,
        /// Keys to check the base bundle's signature with (default: the signing key's own).
        #[arg(long, value_name = "PUBKEY", num_args = 1.., requires = "base")]
        base_trust: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Sign an unsigned bundle (from `build --unsigned`) with a key file, or with a signature of its
    /// manifest made elsewhere (`minisign -S`), checked against --trust; writes the signed bundle,
    /// byte for byte what `build --key` writes. Given NAME.parts (a split bundle signed elsewhere),
    /// adds NAME.parts.minisig.
    Sign {
        /// DIR/<app>-<version>.unsigned.tar.gz, or a split bundle's NAME.parts.
        input: PathBuf,
        #[arg(long, value_name = "PREFIX.key", required_unless_present = "signature", conflicts_with = "signature")]
        key: Option<PathBuf>,
        #[command(flatten)]
        password: PasswordOpts,
        /// The .minisig of the manifest (or of NAME.parts) made elsewhere.
        #[arg(long, value_name = "MINISIG", requires = "trust", conflicts_with_all = ["password_fd", "password_env"])]
        signature: Option<PathBuf>,
        /// Public key(s) the signature must verify with.
        #[arg(long, value_name = "PUBKEY", num_args = 1..)]
        trust: Vec<PathBuf>,
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// Write the signed bundle as parts of at most SIZE bytes, as `build --split-size` does.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        split_size: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Write a key rotation statement "NEW replaces (or, with --add, joins) OLD for APP", signed by
    /// both keys; list the file under `key_rotations:` in the spec of this and every later release.
    Rotate {
        #[arg(long)]
        app: String,
        /// The key sites trust today (it authorises the change).
        #[arg(long, value_name = "OLD.key")]
        old: PathBuf,
        /// The key sites are to trust (it signs too, showing its holder has it).
        #[arg(long, value_name = "NEW.key")]
        new: PathBuf,
        /// Trust NEW beside OLD instead of retiring OLD.
        #[arg(long)]
        add: bool,
        /// The password of OLD (and of NEW unless --new-password-* is given).
        #[command(flatten)]
        password: PasswordOpts,
        #[arg(long, value_name = "FD", conflicts_with = "new_password_env")]
        new_password_fd: Option<i32>,
        #[arg(long, value_name = "NAME")]
        new_password_env: Option<String>,
        /// The statement file to write (never overwritten).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Verify a bundle's signature and every payload byte against trusted public keys.
    Verify {
        bundle: PathBuf,
        #[arg(long, value_name = "PUBKEY", required = true, num_args = 1..)]
        trust: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Show a bundle's manifest (without checking its signature).
    Inspect {
        bundle: PathBuf,
        /// Print the bundle's CycloneDX SBOM (JSON) instead.
        #[arg(long)]
        sbom: bool,
        #[arg(long)]
        json: bool,
    },
    /// Lint a spec without building; with --previous, check that released steps are unchanged.
    Check {
        spec: PathBuf,
        #[arg(long, value_name = "OLD_BUNDLE")]
        previous: Option<PathBuf>,
        /// Check the previous bundle's signature against these keys before comparing with it
        /// (without, its manifest is read unverified).
        #[arg(long, value_name = "PUBKEY", num_args = 1.., requires = "previous")]
        trust: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell) generated from this CLI.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) generated from this CLI.
    Man,
}

/// Where the password of an encrypted secret key comes from (default: asked on the terminal).
/// Never the password itself on the command line.
#[derive(clap::Args, Debug, Clone)]
struct PasswordOpts {
    /// Read the key's password from this open file descriptor (its first line), e.g. `--password-fd 3 3< passfile`.
    #[arg(long, value_name = "FD", conflicts_with = "password_env")]
    password_fd: Option<i32>,
    /// Read the key's password from the environment variable of this NAME (the name, not the password).
    #[arg(long, value_name = "NAME")]
    password_env: Option<String>,
}

impl PasswordOpts {
    fn source(&self) -> PasswordSource {
        PasswordSource::from_options(self.password_fd, self.password_env.clone())
    }
}

#[allow(unsafe_code)]
fn main() -> ExitCode {
    // `bundle-build inspect | head` should end quietly, like any Unix tool, not panic on EPIPE.
    // SAFETY: resetting a signal disposition at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    let (name, json, result) = match cli.command {
        Command::Completions { shell } => return print_completions(shell),
        Command::Man => return print_man(),
        Command::Keygen { out, unencrypted, password, json } => {
            ("keygen", json, keygen(&out, (!unencrypted).then(|| password.source())))
        }
        Command::Build { spec, key, unsigned: _, password, out, split_size, base, base_trust, json } => (
            "build",
            json,
            build_cmd(&spec, key.as_deref(), &password.source(), &out, split_size, base.as_deref(), &base_trust),
        ),
        Command::Sign { input, key, password, signature, trust, out, split_size, json } => (
            "sign",
            json,
            sign_cmd(&input, key.as_deref(), &password.source(), signature.as_deref(), &trust, &out, split_size),
        ),
        Command::Rotate { app, old, new, add, password, new_password_fd, new_password_env, out, json } => {
            let new_source = match (new_password_fd, new_password_env) {
                (None, None) => password.source(),
                (fd, env) => PasswordSource::from_options(fd, env),
            };
            ("rotate", json, rotate_cmd(&app, &old, &password.source(), &new, &new_source, add, &out))
        }
        Command::Verify { bundle, trust, json } => ("verify", json, verify_cmd(&bundle, &trust)),
        Command::Inspect { bundle, sbom: true, json } => ("inspect", json, inspect_sbom(&bundle, json)),
        Command::Inspect { bundle, sbom: false, json } => ("inspect", json, inspect(&bundle, json)),
        Command::Check { spec, previous, trust, json } => {
            ("check", json, check_cmd(&spec, previous.as_deref(), &trust, json))
        }
    };
    if json {
        println!("{}", envelope(name, &result));
    } else if let Err(f) = &result {
        eprintln!("error: {}", f.message);
        if let Some(h) = &f.hint {
            eprintln!("hint: {h}");
        }
    }
    ExitCode::from(result.err().map(|f| f.exit.code()).unwrap_or(0) as u8)
}

fn print_completions(shell: clap_complete::Shell) -> ExitCode {
    use clap::CommandFactory;
    clap_complete::generate(shell, &mut Cli::command(), "bundle-build", &mut std::io::stdout());
    ExitCode::SUCCESS
}

fn print_man() -> ExitCode {
    use clap::CommandFactory;
    match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
    }
}

fn key_failure(e: SignatureError) -> Failure {
    Failure::new(Exit::Usage, e.kind(), e.to_string())
}

fn verify_failure(e: VerifyError) -> Failure {
    let exit = if matches!(e, VerifyError::Write { .. }) { Exit::Failed } else { Exit::Verification };
    Failure::new(exit, e.kind(), e.to_string())
        .hint("do not install this bundle; get a fresh copy from the release engineer")
}

fn load_keys(paths: &[PathBuf]) -> Result<Vec<PublicKey>, Failure> {
    paths.iter().map(|p| PublicKey::read_file(p).map_err(key_failure)).collect()
}

fn password_failure(e: PasswordError) -> Failure {
    Failure::new(Exit::Usage, e.kind(), e.to_string())
}

fn open_key(path: &Path, source: &PasswordSource) -> Result<SecretKey, Failure> {
    password::open_secret_key(path, source).map_err(|e| match e {
        KeyOpenError::Password(e) => password_failure(e),
        KeyOpenError::Key(e) => key_failure(e),
    })
}

/// `keygen`: encrypted with a password from `password` (asked twice on a terminal), or in clear
/// when `password` is `None` (`--unencrypted`). The password is had before anything is written.
fn keygen(prefix: &Path, password: Option<PasswordSource>) -> Result<Value, Failure> {
    let key_path = prefix.with_file_name(format!("{}.key", file_name(prefix)));
    let pub_path = prefix.with_file_name(format!("{}.pub", file_name(prefix)));
    for p in [&key_path, &pub_path] {
        if p.exists() {
            return Err(Failure::new(
                Exit::Usage,
                "exists",
                format!("{} already exists; keygen never overwrites a key", p.display()),
            )
            .hint("choose another --out prefix or move the old key away"));
        }
    }
    let key = SecretKey::generate().map_err(key_failure)?;
    let key_text = match &password {
        Some(source) => {
            let pw = password::new_password(source).map_err(password_failure)?;
            zeroize::Zeroizing::new(key.to_minisign_encrypted(pw.as_bytes()).map_err(key_failure)?)
        }
        None => zeroize::Zeroizing::new(key.to_minisign()),
    };
    let write = |path: &Path, text: &str, mode: u32| -> Result<(), Failure> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .and_then(|mut f| f.write_all(text.as_bytes()).map(|_| f))
            .map_err(|e| Failure::new(Exit::Failed, "io", format!("cannot write {}: {e}", path.display())))?;
        f.flush().ok();
        Ok(())
    };
    write(&key_path, &key_text, 0o600)?;
    write(&pub_path, &key.public_key().to_minisign(), 0o644)?;
    let how = if password.is_some() { "encrypted with your password" } else { "UNENCRYPTED: keep it offline" };
    eprintln!("wrote {} (secret, {how}) and {}", key_path.display(), pub_path.display());
    eprintln!("key id {}", key.key_id());
    Ok(
        json!({ "key_id": key.key_id().to_string(), "secret_key": key_path, "public_key": pub_path, "encrypted": password.is_some() }),
    )
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn source_date_epoch() -> Result<u64, Failure> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse().map_err(|_| {
            Failure::new(
                Exit::Usage,
                "bad_source_date_epoch",
                format!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds"),
            )
        }),
        Err(_) => Ok(0),
    }
}

fn print_lints(lints: &[Lint]) {
    for l in lints {
        let level = match l.level {
            Level::Error => "error",
            Level::Warning => "warning",
        };
        eprintln!("{level}[{}]: {}", l.code, l.message);
    }
}

fn spec_failure(lints: &[Lint], spec: &Path) -> Failure {
    let errors: Vec<&Lint> = lints.iter().filter(|l| l.level == Level::Error).collect();
    let first = errors.first().map(|l| l.message.clone()).unwrap_or_default();
    Failure::new(
        Exit::Usage,
        errors.first().map(|l| l.code).unwrap_or("invalid_spec"),
        format!("{}: {first}", spec.display()),
    )
    .hint(format!("{} error(s) in all; run `bundle-build check {}` to list them", errors.len(), spec.display()))
}

/// `4000M`, `2G`, `512K` or plain bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num.parse().map_err(|_| format!("`{text}` is not a size like 4000M"))?;
    match n.checked_mul(mult) {
        Some(v) if v >= 1 << 20 => Ok(v),
        _ => Err(format!("split size `{text}` must be at least 1M")),
    }
}

/// `build`: signed with the key at `key_path`, or unsigned (for `sign`) when it is `None`; with
/// `base`, a delta bundle against that (verified) earlier bundle.
fn build_cmd(
    spec_path: &Path,
    key_path: Option<&Path>,
    password: &PasswordSource,
    out: &Path,
    split_size: Option<u64>,
    base: Option<&Path>,
    base_trust: &[PathBuf],
) -> Result<Value, Failure> {
    let mtime = source_date_epoch()?;
    let spec = LoadedSpec::load(spec_path).map_err(|e| Failure::new(Exit::Usage, "invalid_spec", e.to_string()))?;
    let key = key_path.map(|k| open_key(k, password)).transpose()?;
    let (release, lints) = release::gather(&spec, mtime);
    print_lints(&lints);
    let mut release = release
        .filter(|_| !lints.iter().any(|l| l.level == Level::Error))
        .ok_or_else(|| spec_failure(&lints, spec_path))?;
    if let Some(base) = base {
        let keys = match (&key, base_trust.is_empty()) {
            (Some(key), true) => vec![key.public_key()],
            (None, true) => {
                return Err(Failure::new(
                    Exit::Usage,
                    "usage",
                    "--base with --unsigned needs --base-trust to check the base bundle's signature",
                ))
            }
            _ => load_keys(base_trust)?,
        };
        let (base_manifest, base_id, _, _) = verify::read_verified_manifest(base, &keys).map_err(|e| {
            let f = verify_failure(e);
            Failure { message: format!("base bundle {}: {}", base.display(), f.message), ..f }
        })?;
        if base_manifest.base.is_some() {
            return Err(Failure::new(
                Exit::Usage,
                "base_is_delta",
                format!("{} is itself a delta bundle; build against a full bundle", base.display()),
            ));
        }
        if base_manifest.app != release.manifest.app {
            return Err(Failure::new(
                Exit::Usage,
                "base_other_app",
                format!("{} is a bundle of {}, not {}", base.display(), base_manifest.app, release.manifest.app),
            ));
        }
        release.manifest.base = build::delta_base(&release.manifest, &base_manifest, &base_id);
        if release.manifest.base.is_none() {
            eprintln!(
                "warning: the base {} {} shares no file with this release; writing a full bundle",
                base_manifest.app, base_manifest.version
            );
        }
    }
    let opts = build::BuildOptions { mtime, split_size };
    let built = match &key {
        Some(key) => build::build(&release, key, out, &opts),
        None => {
            let bytes = release.manifest.to_yaml();
            build::write_bundle(
                &release.manifest,
                &bytes,
                build::PayloadSource::Release(&release),
                build::Signing::Unsigned,
                out,
                &opts,
            )
        }
    }
    .map_err(|e| Failure::new(Exit::Failed, "build_failed", e.to_string()))?;
    report_built(&built);
    Ok(serde_json::to_value(&built).expect("serialisable"))
}

/// The human lines for a written bundle (signed, unsigned, or split awaiting its index signature).
fn report_built(built: &build::Built) {
    let key = built.key_id.as_deref().map(|k| format!("key {k}")).unwrap_or_else(|| "UNSIGNED".into());
    eprintln!(
        "built {} ({} entries, {} payload bytes, {} bytes on disk, {key})",
        built.bundle.display(),
        built.entries,
        built.payload_bytes,
        built.bytes
    );
    let t = built.trusted_comment.replace('\t', "\\t");
    if let Some(manifest) = &built.manifest {
        eprintln!(
            "sign {} elsewhere, then run `bundle-build sign {} --signature {}.minisig --trust KEY.pub`:",
            manifest.display(),
            built.bundle.display(),
            manifest.display()
        );
        eprintln!("  minisign -S -s KEY.key -m {} -t \"$(printf '{t}')\"", manifest.display());
    }
    if built.index_signature_needed {
        eprintln!("the parts index still needs its signature (same trusted comment): sign {} and run `bundle-build sign {} --signature {}.minisig --trust KEY.pub`", built.bundle.display(), built.bundle.display(), built.bundle.display());
        eprintln!("  minisign -S -s KEY.key -m {} -t \"$(printf '{t}')\"", built.bundle.display());
    }
}

fn sign_failure(e: bundle_build::sign::SignError) -> Failure {
    use bundle_build::sign::SignError as E;
    let exit = match &e {
        E::Signature(_) | E::Unsigned(bundle_core::unsigned::UnsignedError::Mismatch { .. }) => Exit::Verification,
        E::Build(_) | E::Write { .. } => Exit::Failed,
        _ => Exit::Usage,
    };
    Failure::new(exit, e.kind(), e.to_string())
}

/// `sign INPUT`: an unsigned bundle becomes the signed one in `out`; a parts index gets its signature.
fn sign_cmd(
    input: &Path,
    key_path: Option<&Path>,
    password: &PasswordSource,
    signature: Option<&Path>,
    trust: &[PathBuf],
    out: &Path,
    split_size: Option<u64>,
) -> Result<Value, Failure> {
    use bundle_build::sign::{self, SignWith};
    let keys = load_keys(trust)?;
    let key = key_path.map(|k| open_key(k, password)).transpose()?;
    let sig = signature
        .map(|p| Signature::read_file(p).map_err(|e| Failure::new(Exit::Usage, e.kind(), e.to_string())))
        .transpose()?;
    let with = match (&key, &sig) {
        (Some(key), _) => SignWith::Key(key),
        (None, Some(signature)) => SignWith::Signature { signature, trusted: &keys },
        (None, None) => return Err(Failure::new(Exit::Usage, "usage", "give --key or --signature")),
    };
    if input.extension().is_some_and(|e| e == "parts") {
        let written = sign::sign_index(input, with).map_err(sign_failure)?;
        eprintln!("wrote {}", written.display());
        return Ok(json!({ "index": input, "signature": written }));
    }
    let built = sign::sign_unsigned(input, with, out, split_size).map_err(sign_failure)?;
    report_built(&built);
    Ok(serde_json::to_value(&built).expect("serialisable"))
}

fn rotate_cmd(
    app: &str,
    old_path: &Path,
    old_pw: &PasswordSource,
    new_path: &Path,
    new_pw: &PasswordSource,
    add: bool,
    out: &Path,
) -> Result<Value, Failure> {
    use bundle_core::rotation::{RotationAction, Statement};
    let old = open_key(old_path, old_pw)?;
    let new = open_key(new_path, new_pw)?;
    let action = if add { RotationAction::Add } else { RotationAction::Replace };
    let statement = Statement { app: app.to_string(), action, old: old.public_key(), new: new.public_key() };
    Statement::parse(&statement.format()).map_err(|e| Failure::new(Exit::Usage, "invalid_key_rotation", e))?;
    let signed = statement.sign(&old, &new).map_err(|e| Failure::new(Exit::Usage, "invalid_key_rotation", e))?;
    let text = serde_yaml::to_string(&signed).expect("serialises");
    use std::io::Write;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|_| f.sync_all()))
        .map_err(|e| {
            Failure::new(Exit::Failed, "io", format!("cannot write {}: {e}", out.display()))
                .hint("rotate never overwrites; choose another --out")
        })?;
    let verb = if add { "joins" } else { "replaces" };
    eprintln!("wrote {}: key {} {verb} key {} for {app}; list it under key_rotations: in the spec of this and every later release", out.display(), new.key_id(), old.key_id());
    Ok(
        json!({ "statement": out, "app": app, "action": action, "old": old.key_id().to_string(), "new": new.key_id().to_string() }),
    )
}

fn verify_cmd(bundle: &Path, trust: &[PathBuf]) -> Result<Value, Failure> {
    let keys = load_keys(trust)?;
    let verified = verify::verify_file(bundle, &keys, None, &Limits::default()).map_err(verify_failure)?;
    let m = verified.manifest();
    eprintln!(
        "OK: {} {} (sequence {}) signed by key {}; {} files, {} bytes verified",
        m.app,
        m.version,
        m.sequence,
        verified.key_id(),
        m.payload.entries,
        m.payload.bytes
    );
    Ok(verified_fields(&verified))
}

fn inspect(bundle: &Path, json: bool) -> Result<Value, Failure> {
    let (manifest, signature) = verify::read_unverified(bundle).map_err(verify_failure)?;
    if !json {
        let m = &manifest;
        println!(
            "{} {} (sequence {}), upgrades from {}, python {}",
            m.app, m.version, m.sequence, m.upgrades_from, m.python
        );
        println!("signed by key {} — signature NOT checked here; use `verify --trust KEY`", signature.key_id);
        println!("trusted comment: {}", signature.trusted_comment);
        if !m.targets.is_empty() {
            println!("targets: {}", m.targets.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", "));
        }
        println!("wheels ({}):", m.wheels.len());
        for w in &m.wheels {
            println!("  {w}{}", if *w == m.app_wheel { "  (app)" } else { "" });
        }
        for db in &m.databases {
            println!("database {} ({}, {}), schema {}:", db.name, db.engine, db.path, db.schema);
            for s in &db.steps {
                let files: Vec<&str> = [&s.up, &s.data, &s.down]
                    .into_iter()
                    .flatten()
                    .map(|f| f.rsplit('/').next().unwrap_or(f))
                    .collect();
                println!("  {:>6}  {}", s.version.to_string(), files.join(", "));
            }
        }
        if let Some(c) = &m.config {
            println!(
                "config {} version {}, converters: {}",
                c.file,
                c.version,
                c.converters.iter().map(|c| format!("{}→{}", c.from, c.to)).collect::<Vec<_>>().join(", ")
            );
        }
        for (name, h) in [
            ("pre_apply", &m.hooks.pre_apply),
            ("post_apply", &m.hooks.post_apply),
            ("health_check", &m.hooks.health_check),
        ] {
            if let Some(h) = h {
                println!("hook {name}: {h}");
            }
        }
        println!("payload: {} files, {} bytes", m.payload.entries, m.payload.bytes);
        match &m.base {
            None => println!("full bundle: carries every file"),
            Some(b) => {
                let bytes: u64 = b.omitted.iter().filter_map(|p| m.file(p)).map(|f| f.size).sum();
                println!(
                    "delta bundle on {} {} (bundle id {}): {} files ({bytes} bytes) are not in the archive; the site needs them from that release (its store) or from its full bundle",
                    b.app, b.version, b.bundle_id, b.omitted.len()
                );
            }
        }
    }
    let delta = manifest.base.as_ref().map(|b| {
        json!({
            "base": { "app": b.app, "version": b.version, "bundle_id": b.bundle_id },
            "needs": b.omitted.iter().filter_map(|p| manifest.file(p)).map(|f| json!({"path": f.path, "sha256": f.sha256, "size": f.size})).collect::<Vec<_>>(),
        })
    });
    Ok(json!({
        "kind": if delta.is_some() { "delta" } else { "full" },
        "delta": delta,
        "signature_checked": false,
        "key_id": signature.key_id.to_string(),
        "trusted_comment": signature.trusted_comment,
        "manifest": manifest,
    }))
}

fn inspect_sbom(bundle: &Path, json: bool) -> Result<Value, Failure> {
    let (manifest, _) = verify::read_unverified(bundle).map_err(verify_failure)?;
    let path = manifest
        .sbom
        .ok_or_else(|| Failure::new(Exit::Usage, "no_sbom", format!("{} carries no SBOM", bundle.display())))?;
    let bytes = verify::read_entry_unverified(bundle, &path, 64 << 20).map_err(verify_failure)?;
    let doc: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Failure::new(Exit::Verification, "invalid_sbom", format!("{path}: {e}")))?;
    if !json {
        println!("{}", String::from_utf8_lossy(&bytes).trim_end());
    }
    Ok(json!({ "signature_checked": false, "sbom": doc }))
}

fn check_cmd(spec_path: &Path, previous: Option<&Path>, trust: &[PathBuf], json: bool) -> Result<Value, Failure> {
    let keys = load_keys(trust)?;
    let spec = LoadedSpec::load(spec_path).map_err(|e| Failure::new(Exit::Usage, "invalid_spec", e.to_string()))?;
    let (release, mut lints) = release::gather(&spec, source_date_epoch()?);
    // Whether the manifest compared against is the one the release key signed: without keys a
    // doctored previous bundle could hide an edited migration.
    let mut previous_checked = None;
    if let (Some(release), Some(old)) = (&release, previous) {
        let old_manifest = if keys.is_empty() {
            previous_checked = Some(false);
            verify::read_unverified(old).map_err(verify_failure)?.0
        } else {
            previous_checked = Some(true);
            verify::read_verified_manifest(old, &keys).map_err(verify_failure)?.0
        };
        lints.extend(check::compare_with_previous(release, &old_manifest));
    }
    if !json {
        print_lints(&lints);
    }
    let errors = lints.iter().filter(|l| l.level == Level::Error).count();
    let warnings = lints.len() - errors;
    if errors > 0 {
        let mut f = spec_failure(&lints, spec_path);
        f.hint = Some(format!("{errors} error(s), {warnings} warning(s)"));
        f.details = Some(json!({ "errors": errors, "warnings": warnings, "lints": lints }));
        return Err(f);
    }
    let against = match previous_checked {
        Some(true) => "; previous bundle's signature checked",
        Some(false) => "; previous bundle read without checking its signature (add --trust KEY)",
        None => "",
    };
    eprintln!("{}: ok ({warnings} warning(s){against})", spec_path.display());
    let mut out = json!({ "errors": errors, "warnings": warnings, "lints": lints });
    if let Some(checked) = previous_checked {
        out["previous_signature_checked"] = json!(checked);
    }
    Ok(out)
}
