//! The `bundle-build` command line: parses arguments, calls the library, and reports the result once
//! (human lines on stderr/stdout, or one JSON object on stdout with `--json`), with the exit codes of
//! `bundle-spec/exit-codes.md`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bundle_build::release::{self, Level, Lint};
use bundle_build::spec::LoadedSpec;
use bundle_build::{build, check};
use bundle_core::exit::Exit;
use bundle_core::report::{envelope, verified_fields, Failure};
use bundle_core::signature::{PublicKey, SecretKey, SignatureError};
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
    /// Create a signing key pair: PREFIX.key (mode 0600) and PREFIX.pub. Never overwrites.
    Keygen {
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Build and sign DIR/<app>-<version>.bundle.tar.gz from a spec.
    Build {
        spec: PathBuf,
        #[arg(long, value_name = "PREFIX.key")]
        key: PathBuf,
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
        /// Write the bundle as parts of at most SIZE bytes (suffixes K, M, G: e.g. 4000M for FAT32),
        /// plus a signed NAME.parts index; `cat` of the parts gives the ordinary bundle.
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        split_size: Option<u64>,
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
        Command::Keygen { out, json } => ("keygen", json, keygen(&out)),
        Command::Build { spec, key, out, split_size, json } => ("build", json, build_cmd(&spec, &key, &out, split_size)),
        Command::Verify { bundle, trust, json } => ("verify", json, verify_cmd(&bundle, &trust)),
        Command::Inspect { bundle, sbom: true, json } => ("inspect", json, inspect_sbom(&bundle, json)),
        Command::Inspect { bundle, sbom: false, json } => ("inspect", json, inspect(&bundle, json)),
        Command::Check { spec, previous, trust, json } => ("check", json, check_cmd(&spec, previous.as_deref(), &trust, json)),
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
    Failure::new(exit, e.kind(), e.to_string()).hint("do not install this bundle; get a fresh copy from the release engineer")
}

fn load_keys(paths: &[PathBuf]) -> Result<Vec<PublicKey>, Failure> {
    paths.iter().map(|p| PublicKey::read_file(p).map_err(key_failure)).collect()
}

fn keygen(prefix: &Path) -> Result<Value, Failure> {
    let key_path = prefix.with_file_name(format!("{}.key", file_name(prefix)));
    let pub_path = prefix.with_file_name(format!("{}.pub", file_name(prefix)));
    for p in [&key_path, &pub_path] {
        if p.exists() {
            return Err(Failure::new(Exit::Usage, "exists", format!("{} already exists; keygen never overwrites a key", p.display()))
                .hint("choose another --out prefix or move the old key away"));
        }
    }
    let key = SecretKey::generate().map_err(key_failure)?;
    let write = |path: &Path, text: String, mode: u32| -> Result<(), Failure> {
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
    write(&key_path, key.to_minisign(), 0o600)?;
    write(&pub_path, key.public_key().to_minisign(), 0o644)?;
    eprintln!("wrote {} (secret, unencrypted: keep it offline) and {}", key_path.display(), pub_path.display());
    eprintln!("key id {}", key.key_id());
    Ok(json!({ "key_id": key.key_id().to_string(), "secret_key": key_path, "public_key": pub_path }))
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn source_date_epoch() -> Result<u64, Failure> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse().map_err(|_| Failure::new(Exit::Usage, "bad_source_date_epoch", format!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds"))),
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
    Failure::new(Exit::Usage, errors.first().map(|l| l.code).unwrap_or("invalid_spec"), format!("{}: {first}", spec.display()))
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

fn build_cmd(spec_path: &Path, key_path: &Path, out: &Path, split_size: Option<u64>) -> Result<Value, Failure> {
    let mtime = source_date_epoch()?;
    let spec = LoadedSpec::load(spec_path).map_err(|e| Failure::new(Exit::Usage, "invalid_spec", e.to_string()))?;
    let key = SecretKey::read_file(key_path).map_err(key_failure)?;
    let (release, lints) = release::gather(&spec, mtime);
    print_lints(&lints);
    let release = release.filter(|_| !lints.iter().any(|l| l.level == Level::Error)).ok_or_else(|| spec_failure(&lints, spec_path))?;
    let built = build::build(&release, &key, out, &build::BuildOptions { mtime, split_size })
        .map_err(|e| Failure::new(Exit::Failed, "build_failed", e.to_string()))?;
    eprintln!(
        "built {} ({} entries, {} payload bytes, {} bytes on disk, key {})",
        built.bundle.display(),
        built.entries,
        built.payload_bytes,
        built.bytes,
        built.key_id
    );
    Ok(serde_json::to_value(&built).expect("serialisable"))
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
        println!("{} {} (sequence {}), upgrades from {}, python {}", m.app, m.version, m.sequence, m.upgrades_from, m.python);
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
                let files: Vec<&str> = [&s.up, &s.data, &s.down].into_iter().flatten().map(|f| f.rsplit('/').next().unwrap_or(f)).collect();
                println!("  {:>6}  {}", s.version.to_string(), files.join(", "));
            }
        }
        if let Some(c) = &m.config {
            println!("config {} version {}, converters: {}", c.file, c.version, c.converters.iter().map(|c| format!("{}→{}", c.from, c.to)).collect::<Vec<_>>().join(", "));
        }
        for (name, h) in [("pre_apply", &m.hooks.pre_apply), ("post_apply", &m.hooks.post_apply), ("health_check", &m.hooks.health_check)] {
            if let Some(h) = h {
                println!("hook {name}: {h}");
            }
        }
        println!("payload: {} files, {} bytes", m.payload.entries, m.payload.bytes);
    }
    Ok(json!({
        "signature_checked": false,
        "key_id": signature.key_id.to_string(),
        "trusted_comment": signature.trusted_comment,
        "manifest": manifest,
    }))
}

fn inspect_sbom(bundle: &Path, json: bool) -> Result<Value, Failure> {
    let (manifest, _) = verify::read_unverified(bundle).map_err(verify_failure)?;
    let path = manifest.sbom.ok_or_else(|| Failure::new(Exit::Usage, "no_sbom", format!("{} carries no SBOM", bundle.display())))?;
    let bytes = verify::read_entry_unverified(bundle, &path, 64 << 20).map_err(verify_failure)?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| Failure::new(Exit::Verification, "invalid_sbom", format!("{path}: {e}")))?;
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
