//! How the library tells the binary what is happening. The library never prints; the binary decides
//! whether to draw progress, print lines, or stay quiet for `--json`.

pub trait Reporter: Sync {
    /// A step starts (one line in a log, or a progress bar's message).
    fn step(&self, message: &str);
    /// Something the admin should read, though the run goes on.
    fn warn(&self, message: &str);
    /// A step whose own output (hooks, scripts) goes to the terminal: no animation over it.
    fn step_with_output(&self, message: &str) {
        self.step(message)
    }
    /// Byte progress of the current step (verification), `total` when known.
    fn progress(&self, _done: u64, _total: Option<u64>) {}
}

/// Reports nothing (unit tests).
#[cfg(test)]
pub(crate) struct Silent;

#[cfg(test)]
impl Reporter for Silent {
    fn step(&self, _: &str) {}
    fn warn(&self, _: &str) {}
}
