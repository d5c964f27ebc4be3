use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
struct Wrapper<T> {
    inner: T,
}

#[derive(Event, Serialize)]
struct Borrowed<'a> {
    name: &'a str,
}

fn main() {}
