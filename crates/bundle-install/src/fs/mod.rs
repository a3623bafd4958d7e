//! Filesystem primitives every step relies on: durable writes (fsync, atomic rename, hard-link or
//! copy trees) in `durable`, and `beneath`, which opens and creates paths without ever following a
//! link out of the site.

pub(crate) mod beneath;
pub(crate) mod durable;
