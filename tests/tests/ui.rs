//! Compile-time behaviour of `#[derive(Event)]` and `#[handler]`: what compiles, and the exact
//! error (message and position) for each mistake. The `.stderr` files are the specification of
//! the errors; regenerate them with `TRYBUILD=overwrite` after a toolchain change and read the diff.

#[test]
fn macros_accept_valid_input_and_reject_mistakes_at_the_right_token() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
