//! Why Redis closed a pub/sub connection, as far as the server lets anyone tell.
//!
//! Redis closes a subscriber that falls behind: when the messages waiting in its output buffer
//! pass `client-output-buffer-limit pubsub` (32 MiB at once, or 8 MiB for 60 s, by default).
//! It says so only in its own log. A client sees the socket close, exactly as after a restart,
//! a `CLIENT KILL` or a proxy closing it. So the hub notes what the server says of itself
//! ([`ServerFacts`], from `INFO`) when the connection opens and again once it is back, and
//! [`Cause::between`] compares the two: another `run_id` is a restart; a higher
//! `client_output_buffer_limit_disconnections` (servers that report it) is a subscriber that
//! fell behind; a higher `evicted_clients` is an eviction for `maxmemory-clients`. Otherwise the
//! server closed it while it kept running, and the limit (from `CONFIG GET`, when the user may
//! read it) is named as the likely reason, with the others.

use std::fmt;

use redis::Value;
use redis::aio::ConnectionManager;

use crate::reply;

/// What a server says of itself in `INFO`, to tell why it closed a connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ServerFacts {
    run_id: Option<String>,
    /// `client_output_buffer_limit_disconnections` (servers that report it).
    output_buffer_disconnections: Option<u64>,
    /// `evicted_clients` (`maxmemory-clients`).
    evicted_clients: Option<u64>,
    /// The `pubsub` class of `client-output-buffer-limit`, when `CONFIG GET` is allowed.
    pubsub_limit: Option<String>,
}

impl ServerFacts {
    /// Reads the facts from `INFO` and `CONFIG GET`; `None` when `INFO` is refused or fails.
    pub(crate) async fn read(conn: &mut ConnectionManager) -> Option<ServerFacts> {
        let info: Value = redis::cmd("INFO").query_async(conn).await.ok()?;
        let mut facts = ServerFacts::parse(&reply::text(&info)?);
        let limits: Result<Value, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("client-output-buffer-limit")
            .query_async(conn)
            .await;
        facts.pubsub_limit = limits.ok().and_then(|v| pubsub_limit(&v));
        Some(facts)
    }

    /// The facts of an `INFO` reply.
    fn parse(info: &str) -> ServerFacts {
        let field = |name: &str| {
            info.lines()
                .filter_map(|line| line.trim_end().split_once(':'))
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_owned())
        };
        ServerFacts {
            run_id: field("run_id"),
            output_buffer_disconnections: field("client_output_buffer_limit_disconnections")
                .and_then(|v| v.parse().ok()),
            evicted_clients: field("evicted_clients").and_then(|v| v.parse().ok()),
            pubsub_limit: None,
        }
    }
}

/// The `pubsub` class of a `CONFIG GET client-output-buffer-limit` reply, in words:
/// `pubsub 33554432 8388608 60` becomes `32 MiB, or 8 MiB for 60 s`.
fn pubsub_limit(reply: &Value) -> Option<String> {
    let value = match reply {
        Value::Map(pairs) => pairs.first().and_then(|(_, v)| reply::text(v)),
        Value::Array(items) => items.get(1).and_then(reply::text),
        _ => None,
    }?;
    let words: Vec<&str> = value.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "pubsub")?;
    let [hard, soft, seconds] = words.get(at + 1..at + 4)? else {
        return None;
    };
    let (hard, soft, seconds): (u64, u64, u64) = (
        hard.parse().ok()?,
        soft.parse().ok()?,
        seconds.parse().ok()?,
    );
    let mut out = match hard {
        0 => "no hard limit".to_owned(),
        n => bytes(n),
    };
    if soft > 0 {
        out.push_str(&format!(", or {} for {seconds} s", bytes(soft)));
    }
    Some(out)
}

fn bytes(n: u64) -> String {
    const MIB: u64 = 1 << 20;
    const KIB: u64 = 1 << 10;
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= KIB && n.is_multiple_of(KIB) {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} bytes")
    }
}

/// The likely cause of a lost pub/sub connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The health check's `PING` got no answer: the network failed (or the server hangs).
    NetworkFailed,
    /// The server runs under another `run_id`: it restarted.
    ServerRestarted,
    /// The server counted one more disconnection for an output buffer over its limit.
    FellBehind { limit: Option<String> },
    /// The server counted one more client evicted for `maxmemory-clients`.
    Evicted,
    /// The server closed it while it kept running, and does not say why.
    ClosedByServer { limit: Option<String> },
    /// Nothing could be read from the server (`INFO` refused or failed).
    Unknown,
}

impl Cause {
    /// The cause of a connection closed between `before` and `after`.
    pub(crate) fn between(before: Option<&ServerFacts>, after: Option<&ServerFacts>) -> Cause {
        let (Some(before), Some(after)) = (before, after) else {
            return Cause::Unknown;
        };
        if before.run_id.is_some() && before.run_id != after.run_id {
            return Cause::ServerRestarted;
        }
        let grew = |f: fn(&ServerFacts) -> Option<u64>| match (f(before), f(after)) {
            (Some(b), Some(a)) => a > b,
            _ => false,
        };
        let limit = after.pubsub_limit.clone();
        if grew(|f| f.output_buffer_disconnections) {
            Cause::FellBehind { limit }
        } else if grew(|f| f.evicted_clients) {
            Cause::Evicted
        } else {
            Cause::ClosedByServer { limit }
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limit = |limit: &Option<String>| match limit {
            Some(l) => format!(" ({l})"),
            None => String::new(),
        };
        match self {
            Cause::NetworkFailed => f.write_str(
                "the network failed: the connection stayed open but did not answer a PING in \
                 time (a network black hole, a lost NAT entry, or a server that hangs)",
            ),
            Cause::ServerRestarted => f.write_str("Redis restarted (its run_id changed)"),
            Cause::FellBehind { limit: l } => write!(
                f,
                "Redis closed it because the subscriber fell behind: the messages waiting for \
                 it passed client-output-buffer-limit pubsub{} (INFO \
                 client_output_buffer_limit_disconnections grew)",
                limit(l)
            ),
            Cause::Evicted => f.write_str(
                "Redis evicted the client to free memory (maxmemory-clients; INFO \
                 evicted_clients grew)",
            ),
            Cause::ClosedByServer { limit: l } => write!(
                f,
                "the server closed it while it kept running (same run_id): most likely the \
                 subscriber fell behind and the messages waiting for it passed \
                 client-output-buffer-limit pubsub{} (a process that stalled, a slow network); \
                 otherwise a CLIENT KILL, or a proxy or load balancer that closed it",
                limit(l)
            ),
            Cause::Unknown => f.write_str(
                "the connection was closed, by the server or on the way; the server did not \
                 say why (INFO refused or unanswered)",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "# Server\r\nredis_version:7.0.15\r\nrun_id:abc\r\n\r\n# Stats\r\n\
                        evicted_clients:0\r\nclient_output_buffer_limit_disconnections:2\r\n";

    fn facts(info: &str) -> ServerFacts {
        ServerFacts::parse(info)
    }

    #[test]
    fn info_fields_are_read() {
        let f = facts(INFO);
        assert_eq!(f.run_id.as_deref(), Some("abc"));
        assert_eq!(f.output_buffer_disconnections, Some(2));
        assert_eq!(f.evicted_clients, Some(0));
    }

    #[test]
    fn the_cause_is_told_from_the_servers_facts() {
        let before = facts(INFO);
        let restarted = facts(&INFO.replace("run_id:abc", "run_id:def"));
        let fell_behind = facts(&INFO.replace("disconnections:2", "disconnections:3"));
        let evicted = facts(&INFO.replace("evicted_clients:0", "evicted_clients:1"));
        let between = |after: &ServerFacts| Cause::between(Some(&before), Some(after));
        assert_eq!(between(&restarted), Cause::ServerRestarted);
        assert_eq!(between(&fell_behind), Cause::FellBehind { limit: None });
        assert_eq!(between(&evicted), Cause::Evicted);
        assert_eq!(between(&before), Cause::ClosedByServer { limit: None });
        assert_eq!(Cause::between(None, Some(&before)), Cause::Unknown);
        // A server without the counter (Redis 7.0) cannot tell; it is not taken for a fall.
        let old = facts("run_id:abc\r\n");
        assert_eq!(
            Cause::between(Some(&old), Some(&old)),
            Cause::ClosedByServer { limit: None }
        );
    }

    #[test]
    fn the_pubsub_limit_is_put_in_words() {
        let config = Value::Array(vec![
            Value::BulkString(b"client-output-buffer-limit".to_vec()),
            Value::BulkString(
                b"normal 0 0 0 slave 268435456 67108864 60 pubsub 33554432 8388608 60".to_vec(),
            ),
        ]);
        assert_eq!(
            pubsub_limit(&config).as_deref(),
            Some("32 MiB, or 8 MiB for 60 s")
        );
        let map = Value::Map(vec![(
            Value::BulkString(b"client-output-buffer-limit".to_vec()),
            Value::BulkString(b"normal 0 0 0 pubsub 262144 0 0".to_vec()),
        )]);
        assert_eq!(pubsub_limit(&map).as_deref(), Some("256 KiB"));
        assert_eq!(pubsub_limit(&Value::Nil), None);
    }
}
