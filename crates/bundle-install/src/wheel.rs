//! Native wheel installation (being written).
