//! A sink that passes `left` deliveries on to `inner`, then never answers again: a backfill is
//! stuck there until the test drops it (an aborted task, Ctrl-C). The resume tests of every
//! backfill use it around their own router sink.

use std::sync::atomic::{AtomicUsize, Ordering};
use valuestream::backfill::Sink;
use valuestream::replay::Recorded;

pub struct Stuck<S> {
    pub inner: S,
    pub left: AtomicUsize,
    /// Notified when the first delivery past `left` arrives.
    pub stuck: tokio::sync::Notify,
}

impl<S> Stuck<S> {
    pub fn after(k: usize, inner: S) -> Self {
        Stuck {
            inner,
            left: AtomicUsize::new(k),
            stuck: tokio::sync::Notify::new(),
        }
    }
}

#[async_trait::async_trait]
impl<S: Sink> Sink for Stuck<S> {
    async fn deliver(&self, d: &Recorded) -> anyhow::Result<(u16, String)> {
        if self
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            self.stuck.notify_one();
            std::future::pending::<()>().await;
        }
        self.inner.deliver(d).await
    }
}
