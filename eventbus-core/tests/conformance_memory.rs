//! The conformance suite on the memory transport: every rule, one test each, on a new
//! in-process store.

eventbus_core::conformance_tests!(eventbus_core::conformance::MemoryBackend::new());

/// `run_all` runs the same list the tests above come from: every rule once, in its area.
#[test]
fn every_rule_is_listed_once() {
    use eventbus_core::conformance::RULES;
    let names: std::collections::BTreeSet<&str> = RULES.iter().map(|r| r.name).collect();
    assert_eq!(names.len(), RULES.len(), "a rule is listed twice");
    let areas: std::collections::BTreeSet<&str> = RULES.iter().map(|r| r.area).collect();
    assert_eq!(
        areas.into_iter().collect::<Vec<_>>(),
        [
            "dead_letters",
            "failures",
            "publishing",
            "pubsub",
            "requests",
            "streams"
        ]
    );
}
