//! Integration tests of the eventbus workspace; see `tests/`.
