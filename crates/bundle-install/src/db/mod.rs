//! Databases behind one engine trait (being written).
