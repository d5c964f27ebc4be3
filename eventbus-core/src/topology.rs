//! The topology: every event type and handler the registry knows, as a stable text snapshot.
//!
//! A channel name derived from a type path changes when a module is renamed, which would orphan
//! a stream and its consumer groups. Check the snapshot into the repository and compare it in a
//! test with [`crate::testing::assert_topology_snapshot`]: a rename then fails a test with a
//! readable diff before it ships.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::error::{Error, Result};
use crate::event::{Durability, EventDescriptor, registered_events};
use crate::handler::{HandlerOptions, registered_handlers};

/// One handler in the topology.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerEntry {
    /// The handler's path.
    pub name: &'static str,
    /// The event it handles.
    pub event: EventDescriptor,
    /// The consumer group (durable events): the `group` option or the handler's path.
    pub group: String,
    /// Its options.
    pub options: HandlerOptions,
}

/// Event types and handlers, sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Topology {
    /// Every event type, by channel.
    pub events: Vec<EventDescriptor>,
    /// Every handler, by event channel then name.
    pub handlers: Vec<HandlerEntry>,
}

impl Topology {
    /// What is linked into this binary: every `#[derive(Event)]` type and every `#[handler]`.
    pub fn from_registry() -> Self {
        let mut events = registered_events();
        let handlers: Vec<HandlerEntry> = registered_handlers()
            .into_iter()
            .map(|h| HandlerEntry {
                name: h.name,
                event: h.event,
                group: h.options.group.unwrap_or(h.name).to_owned(),
                options: h.options,
            })
            .collect();
        for h in &handlers {
            if !events.contains(&h.event) {
                events.push(h.event);
            }
        }
        events.sort_by(|a, b| (a.channel, a.rust_type).cmp(&(b.channel, b.rust_type)));
        Topology { events, handlers }
    }

    /// Fails when two event types map to the same channel, naming both.
    pub fn check_channels(&self) -> Result<()> {
        let mut seen: BTreeMap<&str, &EventDescriptor> = BTreeMap::new();
        for e in &self.events {
            for key in [e.channel, e.pattern] {
                if let Some(other) = seen.get(key)
                    && other.rust_type != e.rust_type
                {
                    let (first, second) = if other.rust_type < e.rust_type {
                        (other.rust_type, e.rust_type)
                    } else {
                        (e.rust_type, other.rust_type)
                    };
                    return Err(Error::DuplicateChannel {
                        channel: key.to_owned(),
                        first,
                        second,
                    });
                }
                seen.insert(key, e);
            }
        }
        Ok(())
    }

    /// The snapshot text: one line per event type and per handler, stable across builds.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# eventbus topology. A change here renames a channel, stream or consumer group:\n\
             # existing streams and pending entries would be orphaned. Regenerate with\n\
             # EVENTBUS_UPDATE_SNAPSHOTS=1 only when that is intended.\n\n[events]\n",
        );
        for e in &self.events {
            let _ = write!(
                out,
                "{} {} type={} rust={} version={}",
                e.durability, e.channel, e.name, e.rust_type, e.version
            );
            if e.pattern != e.channel {
                let _ = write!(out, " pattern={}", e.pattern);
            }
            if e.durability == Durability::Durable {
                match e.max_len {
                    Some(n) => {
                        let _ = write!(out, " max_len={n}");
                    }
                    None => out.push_str(" max_len=default"),
                }
            }
            if let Some(r) = e.reply {
                let _ = write!(out, " reply={r}");
            }
            out.push('\n');
        }
        out.push_str("\n[handlers]\n");
        for h in &self.handlers {
            let o = &h.options;
            let _ = write!(
                out,
                "{} event={} channel={}",
                h.name, h.event.name, h.event.channel
            );
            if h.event.durability == Durability::Durable {
                let _ = write!(out, " group={} mode={}", h.group, o.mode.as_str());
            }
            let _ = write!(
                out,
                " concurrency={} max_deliveries={}",
                o.concurrency, o.max_deliveries
            );
            if let Some(ttl) = o.dedup {
                let _ = write!(out, " dedup_ttl={ttl:?}");
            }
            out.push('\n');
        }
        out
    }
}

/// A line diff of two texts: lines only in `old` start with `-`, lines only in `new` with `+`.
pub fn line_diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // Longest common subsequence table, fine for snapshot-sized inputs.
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            let _ = writeln!(out, "+ {}", b[j]);
            j += 1;
        } else {
            let _ = writeln!(out, "- {}", a[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_shows_changed_lines_only() {
        let d = line_diff("a\nb\nc\n", "a\nx\nc\n");
        assert_eq!(d, "+ x\n- b\n");
    }
}
