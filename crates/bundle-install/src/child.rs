//! Child processes (hooks, converter and migration scripts, byte-compile workers, dump tools) die
//! with the installer: after a kill -9 of the installer, a still-running worker could otherwise
//! recreate files that `recover` has just removed.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the kernel send SIGKILL to the child when the thread that spawned it ends; callers spawn
/// from a thread that waits for the child, so that is when the installer dies.
pub fn die_with_parent(cmd: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe and touches only the child's own state after fork.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}
