//! Child processes (hooks, converter and migration scripts, byte-compile workers, dump tools) die
//! with the installer: after a kill -9 of the installer, a still-running worker could otherwise
//! recreate files that `recover` has just removed. Scripts from the bundle also get a time limit.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// Makes the kernel send SIGKILL to the child when the thread that spawned it ends; callers spawn
/// from a thread that waits for the child, so that is when the installer dies.
#[allow(unsafe_code)]
pub(crate) fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe and touches only the child's own state after fork.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

/// Waits for `child` for at most `limit`. When the time is up, its whole process group is killed
/// (the child must have been spawned with `process_group(0)`, so whatever it started goes too) and
/// `None` is returned.
#[allow(unsafe_code)]
pub(crate) fn wait_or_kill(child: &mut Child, limit: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            // SAFETY: signalling the process group the caller created for this child.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
