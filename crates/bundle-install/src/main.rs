//! The `bundle-install` command line: parses arguments, takes the site lock, finishes or undoes any
//! interrupted run first, calls the library, and reports once — human lines on stderr, or one JSON
//! object on stdout with `--json` — with the exit codes of `bundle-spec/exit-codes.md`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bundle_core::report::{envelope, verified_fields, Failure};
use bundle_core::verify::{self, Limits};
use bundle_install::{
    apply, history, plan_only, recover, rehearse, rollback, rotations_for, status, trust, ApplyOptions, ErrorKind,
    InstallError, LockError, PlanOptions, Recovered, Reporter, Result, RollbackOptions, Site, SiteLock,
    DEFAULT_HOOK_TIMEOUT_SECS,
};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(
    name = "bundle-install",
    version,
    about = "Install, upgrade, roll back and recover a site from signed offline bundles"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Common {
    /// Print one JSON object on stdout instead of human output.
    #[arg(long, global = true)]
    json: bool,
    /// Print nothing but errors and warnings.
    #[arg(long, short, global = true)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Verify a bundle against the given keys, or against the site's trust store.
    Verify {
        bundle: PathBuf,
        #[arg(long, value_name = "PUBKEY", num_args = 1.., required_unless_present = "root")]
        trust: Vec<PathBuf>,
        #[arg(long)]
        root: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Show what apply would do; changes nothing.
    Plan {
        bundle: PathBuf,
        #[arg(long)]
        root: PathBuf,
        #[arg(long, value_name = "PUBKEY", num_args = 1..)]
        trust: Vec<PathBuf>,
        #[arg(long)]
        allow_downgrade: bool,
        #[arg(long)]
        reinstall: bool,
        /// As for apply: declare an unversioned database's version (`DB=VERSION`).
        #[arg(long, value_name = "DB=VERSION", value_parser = parse_baseline)]
        baseline: Vec<(String, bundle_core::version::SchemaVersion)>,
        /// The site's Python interpreter (its tags choose the wheels).
        #[arg(long, default_value = "python3")]
        python: PathBuf,
        /// For a delta bundle: the full bundle it was built on (default: one beside it, if any).
        #[arg(long, value_name = "FULL.bundle.tar.gz")]
        base_bundle: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Verify, stage, migrate and switch to the bundle's release; undone on any failure.
    Apply {
        bundle: PathBuf,
        #[arg(long)]
        root: PathBuf,
        /// Keys to trust on a first install (stored in ROOT/trust/).
        #[arg(long, value_name = "PUBKEY", num_args = 1..)]
        trust: Vec<PathBuf>,
        #[arg(long)]
        allow_downgrade: bool,
        /// Replace an installed release of the same version built from a different bundle.
        #[arg(long)]
        reinstall: bool,
        /// Declare an existing database that has tables but no history to be at VERSION
        /// (e.g. `--baseline client=1.1`); recorded in its history as a baseline.
        #[arg(long, value_name = "DB=VERSION", value_parser = parse_baseline)]
        baseline: Vec<(String, bundle_core::version::SchemaVersion)>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// The site's Python interpreter.
        #[arg(long, default_value = "python3")]
        python: PathBuf,
        /// Seconds a hook or a config converter script may run before it is killed and counts as failed.
        #[arg(long, default_value_t = DEFAULT_HOOK_TIMEOUT_SECS)]
        hook_timeout: u64,
        /// For a delta bundle: the full bundle it was built on, used for the files this site lacks
        /// (default: `<app>-<base version>.bundle.tar.gz` beside it, if there is one).
        #[arg(long, value_name = "FULL.bundle.tar.gz")]
        base_bundle: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Rehearse the apply on scratch copies of the site's databases and config: every step timed,
    /// rows and sizes per table, a prediction of the real run; the live site is only read.
    /// Exit 0 when apply would succeed on today's data, 1 when a step fails, 4 when policy refuses.
    Rehearse {
        bundle: PathBuf,
        #[arg(long)]
        root: PathBuf,
        /// Keys to verify with when the site trusts none yet (not stored).
        #[arg(long, value_name = "PUBKEY", num_args = 1..)]
        trust: Vec<PathBuf>,
        #[arg(long)]
        allow_downgrade: bool,
        #[arg(long)]
        reinstall: bool,
        /// As for apply (`DB=VERSION`).
        #[arg(long, value_name = "DB=VERSION", value_parser = parse_baseline)]
        baseline: Vec<(String, bundle_core::version::SchemaVersion)>,
        /// The site's Python interpreter.
        #[arg(long, default_value = "python3")]
        python: PathBuf,
        /// Seconds a hook or a config converter script may run before it is killed and counts as failed.
        #[arg(long, default_value_t = DEFAULT_HOOK_TIMEOUT_SECS)]
        hook_timeout: u64,
        #[command(flatten)]
        common: Common,
    },
    /// The running release, kept releases, databases and config.
    Status {
        #[arg(long)]
        root: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Every apply, rollback and recover recorded on the site, and apart from them every rehearsal.
    History {
        #[arg(long)]
        root: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Switch back to a kept release (the previous one by default).
    Rollback {
        #[arg(long)]
        root: PathBuf,
        #[arg(long, value_name = "VERSION")]
        to: Option<String>,
        /// Allow restoring the pre-upgrade backup when no down scripts exist: reports per table what
        /// would be lost; restores only with --yes.
        #[arg(long)]
        restore_data: bool,
        /// Confirm: go ahead with a data restore after its loss report.
        #[arg(long)]
        yes: bool,
        /// Seconds a hook may run before it is killed and counts as failed.
        #[arg(long, default_value_t = DEFAULT_HOOK_TIMEOUT_SECS)]
        hook_timeout: u64,
        #[command(flatten)]
        common: Common,
    },
    /// Finish or undo an interrupted run.
    Recover {
        #[arg(long)]
        root: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Exit 0 iff the current release may run on every database (for a service's start-up check).
    Check {
        #[arg(long)]
        root: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Manage the site's trusted keys.
    Trust {
        #[command(subcommand)]
        action: TrustAction,
    },
    /// Print shell completions (bash, zsh, fish, elvish, powershell) generated from this CLI.
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff) generated from this CLI.
    Man,
}

#[derive(Subcommand)]
enum TrustAction {
    /// List trusted and revoked keys.
    List {
        #[arg(long)]
        root: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// Trust more keys (key rotation: trust the new key before bundles are signed with it).
    Add {
        #[arg(long)]
        root: PathBuf,
        #[arg(required = true)]
        keys: Vec<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
    /// Revoke a key (by key id or .pub file); bundles signed with it are refused from now on.
    Revoke {
        #[arg(long)]
        root: PathBuf,
        key: String,
        #[command(flatten)]
        common: Common,
    },
    /// Take a key out of trust/revoked/ and trust it again (by key id or .pub file): the only way
    /// back from a revocation (`trust add` refuses a revoked key).
    Unrevoke {
        #[arg(long)]
        root: PathBuf,
        key: String,
        #[command(flatten)]
        common: Common,
    },
}

/// Shows progress on stderr: a spinner or byte bar per step on a terminal, one `==>` line per step
/// otherwise (logs), nothing with `--quiet` or `--json`.
struct Lines {
    quiet: bool,
    tty: bool,
    bar: std::sync::Mutex<Option<indicatif::ProgressBar>>,
}

impl Lines {
    fn new(quiet: bool) -> Lines {
        use std::io::IsTerminal;
        Lines { quiet, tty: std::io::stderr().is_terminal(), bar: std::sync::Mutex::new(None) }
    }
}

impl Lines {
    /// Ends the live spinner (marking its step done), so what is printed next stays readable.
    fn settle(&self) {
        if let Some(bar) = self.bar.lock().expect("progress lock").take() {
            bar.finish_with_message(format!("{} ✓", bar.message()));
        }
    }

    /// A result line for a person: nothing with `--quiet` or `--json`.
    fn say(&self, message: &str) {
        if self.quiet {
            return;
        }
        self.settle();
        eprintln!("{message}");
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.lock().map(|mut b| b.take()).unwrap_or(None) {
            bar.finish_and_clear();
        }
    }
}

impl Reporter for Lines {
    fn step(&self, message: &str) {
        if self.quiet {
            return;
        }
        if !self.tty {
            eprintln!("==> {message}");
            return;
        }
        let mut slot = self.bar.lock().expect("progress lock");
        if let Some(done) = slot.take() {
            done.finish_with_message(format!("{} ✓", done.message()));
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("template"));
        bar.set_message(message.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        *slot = Some(bar);
    }
    fn warn(&self, message: &str) {
        match self.bar.lock().expect("progress lock").as_ref() {
            Some(bar) => bar.suspend(|| eprintln!("warning: {message}")),
            None => eprintln!("warning: {message}"),
        }
    }
    fn step_with_output(&self, message: &str) {
        // Hooks and scripts write to the terminal themselves: a spinner redrawing over their lines
        // would garble both, so the step gets a plain line instead.
        if self.quiet {
            return;
        }
        self.settle();
        eprintln!("==> {message}");
    }
    fn progress(&self, done: u64, total: Option<u64>) {
        if self.quiet || !self.tty {
            return;
        }
        if let Some(bar) = self.bar.lock().expect("progress lock").as_ref() {
            if let Some(t) = total {
                if bar.length() != Some(t) {
                    bar.set_length(t);
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                        )
                        .expect("template")
                        .progress_chars("=> "),
                    );
                }
            }
            bar.set_position(done);
        }
    }
}

#[allow(unsafe_code)]
fn main() -> ExitCode {
    restore_sigpipe();
    // Whatever umask the admin's shell has, nothing the installer (or a hook it runs) creates is
    // writable by group or others unless a mode says so explicitly (site-layout.md, "Modes").
    // SAFETY: umask only sets the process's file creation mask.
    unsafe { libc::umask(0o022) };
    let cli = Cli::parse();
    match cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "bundle-install", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::Man => {
            use clap::CommandFactory;
            return match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(1),
            };
        }
        _ => {}
    }
    let (name, common, result) = run(cli.command);
    if common.json {
        println!("{}", envelope(name, &result));
    } else if let Err(f) = &result {
        eprintln!("error: {}", f.message);
        if let Some(h) = &f.hint {
            eprintln!("hint: {h}");
        }
    }
    ExitCode::from(result.err().map(|f| f.exit.code()).unwrap_or(0) as u8)
}

/// `client=1.1` → (`client`, 1.1).
fn parse_baseline(text: &str) -> std::result::Result<(String, bundle_core::version::SchemaVersion), String> {
    let (db, v) = text.split_once('=').ok_or_else(|| format!("`{text}`: expected DB=VERSION, e.g. client=1.1"))?;
    Ok((db.to_string(), v.parse()?))
}

/// `bundle-install status | head` should end quietly, like any Unix tool, not panic on EPIPE.
#[allow(unsafe_code)]
fn restore_sigpipe() {
    // SAFETY: resetting a signal disposition at start-up, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn failure(e: InstallError) -> Failure {
    let mut f = Failure::new(e.exit(), e.kind.as_str(), e.message);
    f.hint = e.hint;
    f
}

/// A locked site; `created` holds what this command created for a new site.
struct Opened {
    site: Site,
    _lock: SiteLock,
    recovered: Recovered,
    created: Option<Vec<PathBuf>>,
}

/// The site at `root`, locked, with any interrupted run finished or undone first.
fn open_site(root: &Path, command: &str, reporter: &dyn Reporter, create: bool) -> Result<Opened> {
    let site = Site::new(root);
    site.check_planted_links().map_err(|e| {
        InstallError::refused(ErrorKind::PlantedSymlink, e.to_string())
            .with_hint("remove the link (and check who put it there), then run the command again")
            .with_source(e)
    })?;
    let unsafe_dir = |e: std::io::Error| {
        InstallError::refused(ErrorKind::UnsafePermissions, e.to_string())
            .with_hint("make it owned by the user running bundle-install and writable only by it (chown, chmod go-w), check who could have changed it, then run the command again")
            .with_source(e)
    };
    site.check_private_dirs().map_err(unsafe_dir)?;
    let mut created = None;
    if create {
        created = site.ensure_layout().map_err(|e| {
            InstallError::failed(ErrorKind::SiteLayout, format!("preparing {}: {e}", root.display())).with_source(e)
        })?;
        site.check_private_dirs().map_err(unsafe_dir)?;
    } else if !site.state().is_dir() {
        return Err(InstallError::usage(
            ErrorKind::NoSite,
            format!("{} is not a site (no state/ directory)", root.display()),
        )
        .with_hint("install one with `bundle-install apply BUNDLE --root ROOT --trust KEY.pub`"));
    }
    let lock = SiteLock::acquire(&site.state().join("lock"), command).map_err(|e| match e {
        LockError::Io { .. } => InstallError::failed(ErrorKind::Lock, e.to_string()).with_source(e),
        _ => InstallError::refused(ErrorKind::Locked, e.to_string()).with_hint("wait for the other run to finish"),
    })?;
    let recovered = recover(&site, reporter)?;
    Ok(Opened { site, _lock: lock, recovered, created })
}

fn run(command: Command) -> (&'static str, Common, std::result::Result<Value, Failure>) {
    match command {
        Command::Verify { bundle, trust, root, common } => {
            let reporter = Lines::new(common.quiet || common.json);
            ("verify", common.clone(), verify_cmd(&bundle, &trust, root.as_deref(), &reporter).map_err(failure))
        }
        Command::Plan { bundle, root, trust, allow_downgrade, reinstall, baseline, python, base_bundle, common } => {
            let opts = ApplyOptions {
                plan: PlanOptions { allow_downgrade, reinstall, baseline },
                trust,
                python,
                base_bundle,
                ..ApplyOptions::default()
            };
            ("plan", common.clone(), plan_cmd(&root, &bundle, &opts, &common).map_err(failure))
        }
        Command::Apply {
            bundle,
            root,
            trust,
            allow_downgrade,
            reinstall,
            baseline,
            yes: _,
            python,
            hook_timeout,
            base_bundle,
            common,
        } => {
            let opts = ApplyOptions {
                plan: PlanOptions { allow_downgrade, reinstall, baseline },
                trust,
                python,
                hook_timeout_secs: hook_timeout,
                base_bundle,
            };
            ("apply", common.clone(), apply_cmd(&root, &bundle, &opts, &common).map_err(failure))
        }
        Command::Rehearse {
            bundle,
            root,
            trust,
            allow_downgrade,
            reinstall,
            baseline,
            python,
            hook_timeout,
            common,
        } => {
            let opts = ApplyOptions {
                plan: PlanOptions { allow_downgrade, reinstall, baseline },
                trust,
                python,
                hook_timeout_secs: hook_timeout,
                base_bundle: None,
            };
            ("rehearse", common.clone(), rehearse_cmd(&root, &bundle, &opts, &common))
        }
        Command::Status { root, common } => ("status", common.clone(), status_cmd(&root, &common).map_err(failure)),
        Command::History { root, common } => ("history", common.clone(), history_cmd(&root, &common).map_err(failure)),
        Command::Rollback { root, to, restore_data, yes, hook_timeout, common } => {
            let opts = RollbackOptions { to, restore_data, yes, hook_timeout_secs: hook_timeout };
            ("rollback", common.clone(), rollback_cmd(&root, &opts, &common).map_err(failure))
        }
        Command::Recover { root, common } => ("recover", common.clone(), recover_cmd(&root, &common).map_err(failure)),
        Command::Check { root, common } => ("check", common.clone(), check_cmd(&root, &common).map_err(failure)),
        Command::Trust { action } => trust_cmd(action),
        Command::Completions { .. } | Command::Man => unreachable!("handled in main"),
    }
}

/// `plan`: what `apply` would do, from the state it would really start from.
fn plan_cmd(root: &Path, bundle: &Path, opts: &ApplyOptions, common: &Common) -> Result<Value> {
    let reporter = Lines::new(common.quiet || common.json);
    // A site with an interrupted run is recovered first, like by every other command, so
    // the plan describes the state apply would really start from.
    let opened;
    let site = if Site::new(root).state().is_dir() {
        opened = open_site(root, "plan", &reporter, false)?;
        &opened.site
    } else {
        &Site::new(root)
    };
    let plan = plan_only(site, bundle, opts)?;
    if !common.json {
        print!("{}", plan.render());
    }
    Ok(json!({ "plan": plan }))
}

/// `apply`: verify, plan and run the upgrade (or the first install).
fn apply_cmd(root: &Path, bundle: &Path, opts: &ApplyOptions, common: &Common) -> Result<Value> {
    let reporter = Lines::new(common.quiet || common.json);
    let opened = open_site(root, "apply", &reporter, true)?;
    let applied = match apply(&opened.site, bundle, opts, &reporter) {
        Ok(a) => a,
        Err(e) => {
            // A first install that failed leaves no empty skeleton behind.
            if let Some(created) = opened.created.clone() {
                let site = opened.site.clone();
                drop(opened);
                site.remove_new_layout(&created);
            }
            return Err(e);
        }
    };
    let recovered = opened.recovered;
    if !common.json {
        if applied.changed {
            reporter.say(&format!("done: {} {} is now current", applied.plan.app, applied.plan.to));
        } else {
            reporter.say(&format!("{} {} is already installed: nothing to do", applied.plan.app, applied.plan.to));
        }
    }
    Ok(json!({ "applied": applied, "recovered": recovered }))
}

/// `rehearse`: the upgrade on copies of the site's data; a failed rehearsal is a failure of the
/// command that carries the rehearsal's report.
fn rehearse_cmd(
    root: &Path,
    bundle: &Path,
    opts: &ApplyOptions,
    common: &Common,
) -> std::result::Result<Value, Failure> {
    let reporter = Lines::new(common.quiet || common.json);
    let r = (|| {
        let opened = open_site(root, "rehearse", &reporter, false)?;
        let report = rehearse(&opened.site, bundle, opts, &reporter)?;
        if !common.json && !report.steps.is_empty() {
            reporter.settle();
            eprint!("{}", report.render());
        }
        Ok(report)
    })();
    match r {
        Ok(report) if report.ok && report.steps.is_empty() => {
            if !common.json {
                reporter.say(&format!("{} {} is already installed: nothing to rehearse", report.app, report.to));
            }
            Ok(json!({ "rehearsal": report }))
        }
        Ok(report) if report.ok => {
            if !common.json {
                reporter.say(&format!("ok: apply of {} {} would succeed on today's data", report.app, report.to));
            }
            Ok(json!({ "rehearsal": report }))
        }
        Ok(report) => {
            let e = report.error.clone().expect("a failed rehearsal names its error");
            let mut f = Failure::new(
                bundle_core::exit::Exit::Failed,
                e.kind.as_str(),
                format!("rehearsal: {}", e.message),
            )
            .hint(
                "fix the step (or the data it trips on) before the maintenance window; the live site was not changed",
            );
            f.details = Some(json!({ "rehearsal": report }));
            Err(f)
        }
        Err(e) => Err(failure(e)),
    }
}

/// `status`: the current release, the kept ones and each database's version.
fn status_cmd(root: &Path, common: &Common) -> Result<Value> {
    let reporter = Lines::new(common.quiet || common.json);
    let Opened { site, recovered, .. } = open_site(root, "status", &reporter, false)?;
    let st = status::status(&site)?;
    if !common.json {
        print!("{}", st.render());
    }
    Ok(json!({ "status": st, "recovered": recovered }))
}

/// `history`: the runs recorded on the site, then the rehearsals.
fn history_cmd(root: &Path, common: &Common) -> Result<Value> {
    let reporter = Lines::new(common.quiet || common.json);
    let Opened { site, .. } = open_site(root, "history", &reporter, false)?;
    let (rehearsals, records): (Vec<Value>, Vec<Value>) =
        history::read(&site)?.into_iter().partition(history::is_rehearsal);
    if !common.json {
        for r in &records {
            println!(
                "{}  {:<9} {} → {}  {}{}",
                r["finished_at"].as_str().unwrap_or(""),
                r["command"].as_str().unwrap_or(""),
                r["from"].as_str().unwrap_or("-"),
                r["to"].as_str().unwrap_or("-"),
                r["outcome"].as_str().unwrap_or(""),
                r["error"]["message"].as_str().map(|m| format!(": {m}")).unwrap_or_default()
            );
        }
    }
    if !common.json && !rehearsals.is_empty() {
        println!("rehearsals (on copies of the data; the site was not changed):");
        for r in &rehearsals {
            println!(
                "{}  rehearse  {} → {}  {}  bundle sha256 {}{}",
                r["finished_at"].as_str().unwrap_or(""),
                r["from"].as_str().unwrap_or("-"),
                r["to"].as_str().unwrap_or("-"),
                r["outcome"].as_str().unwrap_or(""),
                r["bundle_sha256"].as_str().unwrap_or(""),
                r["error"]["message"].as_str().map(|m| format!(": {m}")).unwrap_or_default()
            );
        }
    }
    Ok(json!({ "history": records, "rehearsals": rehearsals }))
}

/// `rollback`: back to a kept release.
fn rollback_cmd(root: &Path, opts: &RollbackOptions, common: &Common) -> Result<Value> {
    let reporter = Lines::new(common.quiet || common.json);
    let Opened { site, .. } = open_site(root, "rollback", &reporter, false)?;
    let done = rollback(&site, opts, &reporter)?;
    if !common.json {
        reporter.say(&format!("done: rolled back {} → {}", done.from, done.to));
    }
    Ok(json!({ "rollback": done }))
}

/// `recover`: finish or undo an interrupted run (opening the site does it) and say which.
fn recover_cmd(root: &Path, common: &Common) -> Result<Value> {
    let reporter = Lines::new(common.quiet || common.json);
    let Opened { recovered, .. } = open_site(root, "recover", &reporter, false)?;
    if !common.json {
        match &recovered {
            Recovered::Nothing => reporter.say("nothing to recover"),
            Recovered::Completed { id, version, .. } => {
                reporter.say(&format!("finished interrupted run {id}: {version} is current"))
            }
            Recovered::Undone { id, version, .. } => reporter.say(&format!(
                "undid interrupted run {id}: {}",
                version.as_deref().map(|v| format!("{v} is current")).unwrap_or_else(|| "nothing installed".into())
            )),
        }
    }
    Ok(json!({ "recovery": recovered }))
}

/// `check`: may the current release run on its databases? A refusal when not.
fn check_cmd(root: &Path, common: &Common) -> Result<Value> {
    let reporter = Lines::new(common.quiet || common.json);
    let Opened { site, .. } = open_site(root, "check", &reporter, false)?;
    let st = status::status(&site)?;
    if !st.healthy {
        let why = if st.current.is_none() {
            "nothing is installed".to_string()
        } else {
            st.databases
                .iter()
                .filter(|d| !d.compatible)
                .map(|d| format!("database `{}` is at {}, the release needs {}", d.name, d.version, d.release_schema))
                .collect::<Vec<_>>()
                .join("; ")
        };
        return Err(InstallError::refused(ErrorKind::Incompatible, format!("the current release may not run: {why}")));
    }
    if !common.json {
        reporter.say(&format!(
            "ok: {} {} may run on its databases",
            st.app.clone().unwrap_or_default(),
            st.current.clone().unwrap_or_default()
        ));
    }
    Ok(json!({ "current": st.current, "databases": st.databases }))
}

fn verify_cmd(bundle: &Path, trust: &[PathBuf], root: Option<&Path>, reporter: &Lines) -> Result<Value> {
    let site = root.map(Site::new);
    let mut keys = trust::keys_for_verify(site.as_ref(), trust)?;
    if let (Some(s), true) = (&site, trust.is_empty()) {
        // As `plan` and `apply` would: the bundle's key rotation statements count (nothing is
        // written here).
        keys = rotations_for(s, bundle, &keys).keys_for_bundle(&keys);
    }
    let verified = verify::verify_file(bundle, &keys, None, &Limits::default()).map_err(|e| match &site {
        Some(s) => trust::verify_error(s, e),
        None => e.into(),
    })?;
    let m = verified.manifest();
    reporter.say(&format!(
        "OK: {} {} (sequence {}) signed by key {}; {} files, {} bytes verified",
        m.app,
        m.version,
        m.sequence,
        verified.key_id(),
        m.payload.entries,
        m.payload.bytes
    ));
    Ok(verified_fields(&verified))
}

fn trust_cmd(action: TrustAction) -> (&'static str, Common, std::result::Result<Value, Failure>) {
    match action {
        TrustAction::List { root, common } => {
            let site = Site::new(&root);
            let r = (|| {
                let keys = site
                    .trusted_keys()
                    .map_err(|e| InstallError::usage(ErrorKind::TrustStore, e.to_string()).with_source(e))?;
                let revoked = site
                    .revoked_keys()
                    .map_err(|e| InstallError::usage(ErrorKind::TrustStore, e.to_string()).with_source(e))?;
                let retired = trust::retired_keys(&site);
                if !common.json {
                    for k in &keys {
                        println!("trusted {}", k.key_id());
                    }
                    for k in &revoked {
                        println!("revoked {}", k.key_id());
                    }
                    for k in &retired {
                        println!("retired {k}");
                    }
                }
                Ok(json!({
                    "trusted": keys.iter().map(|k| k.key_id().to_string()).collect::<Vec<_>>(),
                    "revoked": revoked.iter().map(|k| k.key_id().to_string()).collect::<Vec<_>>(),
                    "retired": retired.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
                }))
            })();
            ("trust", common, r.map_err(failure))
        }
        TrustAction::Add { root, keys, common } => {
            let reporter = Lines::new(common.quiet || common.json);
            let r = (|| {
                let Opened { site, .. } = open_site(&root, "trust add", &reporter, true)?;
                let added = trust::store_keys(&site, &keys)?;
                Ok(json!({ "added": added.iter().map(|k| k.key_id().to_string()).collect::<Vec<_>>() }))
            })();
            ("trust", common, r.map_err(failure))
        }
        TrustAction::Revoke { root, key, common } => {
            let reporter = Lines::new(common.quiet || common.json);
            let r = (|| {
                let Opened { site, .. } = open_site(&root, "trust revoke", &reporter, false)?;
                let k = trust::revoke(&site, &key)?;
                Ok(json!({ "revoked": k.key_id().to_string() }))
            })();
            ("trust", common, r.map_err(failure))
        }
        TrustAction::Unrevoke { root, key, common } => {
            let reporter = Lines::new(common.quiet || common.json);
            let r = (|| {
                let Opened { site, .. } = open_site(&root, "trust unrevoke", &reporter, false)?;
                let k = trust::unrevoke(&site, &key)?;
                Ok(json!({ "unrevoked": k.key_id().to_string() }))
            })();
            ("trust", common, r.map_err(failure))
        }
    }
}
