//! Small helpers shared by the bench binaries (`stage`, `dbbench`). Not part of the product: the
//! binaries call the installer's library directly so that the numbers exclude process start-up,
//! verification and migrations, and have sub-millisecond resolution.

use std::time::{Duration, Instant};

/// Milliseconds as a float, for JSON.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `f` and returns its result and how long it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed())
}

/// Prints an error and exits 1.
pub fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("bench-tools: {msg}");
    std::process::exit(1)
}
