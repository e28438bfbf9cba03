//! Recovery tests (filled below).
