//! `reply = T` makes a request event: `type Reply = T`, `impl Request`, and the reply's type name
//! in the descriptor.
use eventbus_core::prelude::*;

#[derive(Event, Serialize, Deserialize)]
#[event(reply = UserFound)]
struct FindUser {
    id: u64,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct UserFound {
    name: String,
}

#[derive(Event, Serialize, Deserialize)]
#[event(ephemeral, reply = Vec<String>)]
struct ListNames;

#[derive(Event, Serialize, Deserialize)]
struct NoReply;

fn is_request<R: Request>() {}
fn reply_of<E: Event<Reply = R>, R>() {}

fn main() {
    is_request::<FindUser>();
    is_request::<ListNames>();
    reply_of::<FindUser, UserFound>();
    reply_of::<ListNames, Vec<String>>();
    reply_of::<NoReply, ()>();
    assert_eq!(FindUser::DESCRIPTOR.reply, Some("UserFound"));
    assert_eq!(ListNames::DESCRIPTOR.reply, Some("Vec<String>"));
    assert_eq!(NoReply::DESCRIPTOR.reply, None);
    let _ = FindUser { id: 1 }.id;
    let _ = UserFound {
        name: String::new(),
    }
    .name;
}
