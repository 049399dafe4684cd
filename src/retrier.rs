//! The background retrier: claims due rows (failed and due, pending, or processing with an
//! expired lease) with SKIP LOCKED, so several replicas share the queue, and processes them.

use tokio::sync::watch;

use crate::ingest::Pipeline;

const BATCH: i64 = 16;

pub async fn run(pipeline: Pipeline, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(pipeline.poll_interval()) => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = drain(&pipeline, &stop).await {
            tracing::warn!(error = %e, "retrier pass failed; trying again later");
        }
    }
}

/// Works through everything due now; returns early (after the row in hand) when stopping.
async fn drain(
    pipeline: &Pipeline,
    stop: &watch::Receiver<bool>,
) -> Result<(), crate::ingest::IngestError> {
    loop {
        let claimed = pipeline.claim_due(BATCH).await?;
        if claimed.is_empty() {
            return Ok(());
        }
        for row_id in claimed {
            // Rows claimed but not started when we stop keep their lease and are reclaimed
            // after it by whichever worker runs then.
            if *stop.borrow() {
                return Ok(());
            }
            pipeline.process_claimed(row_id).await?;
        }
    }
}
