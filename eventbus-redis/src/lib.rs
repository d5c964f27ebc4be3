//! Redis backend of eventbus (in progress): pub/sub for ephemeral events, Streams with consumer
//! groups for durable ones.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
