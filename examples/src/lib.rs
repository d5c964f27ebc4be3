//! Runnable examples of eventbus; see `examples/`.
