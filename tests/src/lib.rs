//! Cross-crate integration and fault-injection suites for `gpusched` (the suites live in
//! `tests/tests/`). Helpers shared by the suites go here.
