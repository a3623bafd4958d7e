//! minisign-format keys and signatures (being written).
