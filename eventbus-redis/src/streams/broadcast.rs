//! Broadcast mode: every instance reads every entry with `XREAD`, from the last entry id the
//! stream had when the handler started, advancing through the stream. Nothing is acknowledged
//! and no consumer group is involved.

use std::sync::Arc;

use async_trait::async_trait;
use eventbus_core::envelope::WireBody;
use eventbus_core::transport::{ConsumerSpec, Delivery, StreamConsumer};
use eventbus_core::{Error, Result};

use super::reader::{Interrupter, Reader};
use crate::Inner;
use crate::error::{On, command_failed_as, unexpected};
use crate::reply;

pub(super) struct BroadcastConsumer {
    inner: Arc<Inner>,
    stream: String,
    interrupter: Interrupter,
    state: tokio::sync::Mutex<State>,
}

struct State {
    reader: Reader,
    /// The id of the last entry read.
    last_id: String,
}

impl BroadcastConsumer {
    pub(super) fn new(inner: Arc<Inner>, spec: ConsumerSpec, last_id: String) -> Self {
        let what = format!(
            "broadcast reader \"{}\" of stream \"{}\"",
            spec.consumer, spec.stream
        );
        let reader = Reader::new(&inner, what, spec.stats);
        BroadcastConsumer {
            interrupter: reader.interrupter.clone(),
            state: tokio::sync::Mutex::new(State { reader, last_id }),
            inner,
            stream: spec.stream,
        }
    }
}

#[async_trait]
impl StreamConsumer for BroadcastConsumer {
    async fn fetch(&self, max: usize) -> Result<Vec<Delivery>> {
        if self.inner.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        let mut st = self.state.lock().await;
        let mut cmd = redis::cmd("XREAD");
        cmd.arg("COUNT")
            .arg(max.max(1))
            .arg("BLOCK")
            .arg(super::block_millis(self.inner.options.block))
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(&st.last_id);
        let what = st.reader.what.clone();
        let Some(value) = st.reader.blocking_cmd(&cmd).await.map_err(|e| {
            command_failed_as(
                self.inner.address.user(),
                "XREAD",
                On::Key(&self.stream),
                format!("XREAD for {what}"),
                e,
            )
        })?
        else {
            return Ok(Vec::new());
        };
        let entries = reply::read_reply(value).ok_or_else(|| {
            unexpected(format!(
                "XREAD for {}: unexpected reply shape",
                st.reader.what
            ))
        })?;
        if let Some(last) = entries.last() {
            st.last_id = last.id.clone();
        }
        Ok(entries
            .into_iter()
            .filter_map(|entry| {
                Some(Delivery {
                    channel: self.stream.clone(),
                    body: WireBody::Fields(entry.fields?),
                    entry_id: Some(entry.id),
                    delivery_count: 1,
                    token: None,
                })
            })
            .collect())
    }

    async fn ack(&self, _entry_ids: &[String]) -> Result<()> {
        Ok(())
    }

    async fn interrupt(&self) {
        self.interrupter.interrupt(&self.inner.publisher).await;
    }
}
