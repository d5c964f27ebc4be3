//! The conformance suite on the memory transport: every rule, one test each, on a new
//! in-process store.

eventbus_core::conformance_tests!(eventbus_core::conformance::MemoryBackend::new());
