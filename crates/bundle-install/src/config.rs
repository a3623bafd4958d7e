//! Config conversion (being written).
