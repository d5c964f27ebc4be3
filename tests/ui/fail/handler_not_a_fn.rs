use eventbus_core::prelude::*;

#[handler]
struct NotAFunction;

fn main() {}
