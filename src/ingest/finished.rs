//! Whether delivered ids are already finished, asked of the database together. Redeliveries
//! arrive in bursts (Stripe retrying after an outage, a dashboard "resend all"), and a round
//! trip per id costs both processes far more than the index probe itself. So one asker at a
//! time leads: it sends one `= any($1)` probe for its own id and every id that queued while the
//! previous probe was out and answers them; the asks that queued meanwhile go out next, from a
//! task of their own, so the leader's answer does not wait for their probe. An idle worker
//! probes alone at once, so a lone redelivery waits for nothing.
//!
//! The database stays the verdict: a queued asker gets the answer of a probe sent after it
//! queued. An asker whose leader went away (its request was cancelled, the probe failed)
//! probes on its own, so an error is always the asker's own.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use deadpool_postgres::Pool;
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use super::status::Status;
use super::IngestError;

/// At most this many ids per probe; the rest wait for the next one.
const MAX_BATCH: usize = 256;

const FINISHED_AMONG: &str = "select stripe_event_id, processing_status
  from public.stripe_webhook_events where stripe_event_id = any($1)";

/// Which of some ids are stored with a finished status.
pub trait Probe: Send + Sync + 'static {
    fn finished_among(&self, ids: Vec<String>) -> BoxFuture<'_, Result<Vec<String>, IngestError>>;
}

/// The event log's answer.
pub struct EventLog {
    pool: Pool,
}

impl Probe for EventLog {
    fn finished_among(&self, ids: Vec<String>) -> BoxFuture<'_, Result<Vec<String>, IngestError>> {
        Box::pin(async move {
            let client = self.pool.get().await?;
            let stmt = client.prepare_cached(FINISHED_AMONG).await?;
            let rows = client.query(&stmt, &[&ids]).await?;
            Ok(rows
                .into_iter()
                .filter(|r| Status::parse(r.get(1)).is_some_and(Status::is_finished))
                .map(|r| r.get(0))
                .collect())
        })
    }
}

/// Whether delivered ids are finished, with the redeliveries that arrive together sharing one
/// probe of the event log.
pub type FinishedProbe = Coalescer<EventLog>;

impl FinishedProbe {
    pub fn for_pool(pool: Pool) -> Arc<Self> {
        Arc::new(Coalescer::new(EventLog { pool }))
    }
}

/// One probe out at a time; the asks that come meanwhile queue, to be answered by the next.
pub struct Coalescer<P> {
    probe: P,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    leading: bool,
    waiting: VecDeque<Waiter>,
}

struct Waiter {
    event_id: String,
    answer: oneshot::Sender<Answer>,
}

enum Answer {
    Finished(bool),
    /// The previous leader went away: probe for yourself and everyone queued.
    Lead,
}

impl<P: Probe> Coalescer<P> {
    fn new(probe: P) -> Self {
        Self {
            probe,
            queue: Mutex::default(),
        }
    }

    /// Whether `event_id` is stored with a finished status.
    pub async fn is_finished(self: &Arc<Self>, event_id: &str) -> Result<bool, IngestError> {
        let queued = {
            let mut q = self.lock();
            if q.leading {
                let (answer, rx) = oneshot::channel();
                q.waiting.push_back(Waiter {
                    event_id: event_id.to_owned(),
                    answer,
                });
                Some(InLine {
                    coalescer: self,
                    rx: Some(rx),
                })
            } else {
                q.leading = true;
                None
            }
        };
        if let Some(mut in_line) = queued {
            match in_line.wait().await {
                Some(Answer::Finished(finished)) => return Ok(finished),
                Some(Answer::Lead) => {}
                // The leader went away with our id: ask on our own, so the error is ours.
                None => {
                    let found = self.probe.finished_among(vec![event_id.to_owned()]).await?;
                    return Ok(!found.is_empty());
                }
            }
        }
        let mut lead = Lead {
            coalescer: self.clone(),
            released: false,
        };
        let batch = lead.next_batch(false).unwrap_or_default();
        let finished = self.probe_for(batch, Some(event_id)).await?;
        // Whoever queued meanwhile goes out next, from a task of its own, so this answer is
        // not held back by their probe.
        if let Some(next) = lead.next_batch(true) {
            tokio::spawn(lead.serve(next));
        }
        Ok(finished.contains(event_id))
    }

    /// Probes the batch's ids and `own`, answers the batch and returns what was found. On an
    /// error the batch is dropped unanswered: each of them asks on its own.
    async fn probe_for(
        &self,
        batch: Vec<Waiter>,
        own: Option<&str>,
    ) -> Result<HashSet<String>, IngestError> {
        let mut ids: Vec<String> = batch.iter().map(|w| w.event_id.clone()).collect();
        ids.extend(own.map(str::to_owned));
        let finished: HashSet<String> = self.probe.finished_among(ids).await?.into_iter().collect();
        for waiter in batch {
            let answer = Answer::Finished(finished.contains(&waiter.event_id));
            let _ = waiter.answer.send(answer);
        }
        Ok(finished)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The queue holds no invariant a panicking holder could break half-way.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives the lead to the first waiter still listening, or lets it go.
    fn hand_over(&self) {
        let mut q = self.lock();
        while let Some(next) = q.waiting.pop_front() {
            if next.answer.send(Answer::Lead).is_ok() {
                return;
            }
        }
        q.leading = false;
    }
}

/// Held while leading. Dropped while still leading (a cancelled request, a failed probe, a
/// runtime shutting down), it hands the lead to a waiter, so the queue never stalls.
struct Lead<P: Probe> {
    coalescer: Arc<Coalescer<P>>,
    released: bool,
}

impl<P: Probe> Lead<P> {
    /// The waiters for the next probe. With `release_if_none`, an empty queue ends the lead
    /// (under the same lock, so nobody queues behind a lead that is gone).
    fn next_batch(&mut self, release_if_none: bool) -> Option<Vec<Waiter>> {
        let mut q = self.coalescer.lock();
        if q.waiting.is_empty() {
            if release_if_none {
                q.leading = false;
                self.released = true;
            }
            return None;
        }
        let n = q.waiting.len().min(MAX_BATCH);
        Some(q.waiting.drain(..n).collect())
    }

    /// Probes for the queue until it is empty.
    async fn serve(mut self, mut batch: Vec<Waiter>) {
        loop {
            if self.coalescer.probe_for(batch, None).await.is_err() {
                return;
            }
            match self.next_batch(true) {
                Some(next) => batch = next,
                None => return,
            }
        }
    }
}

impl<P: Probe> Drop for Lead<P> {
    fn drop(&mut self) {
        if !self.released {
            self.coalescer.hand_over();
        }
    }
}

/// A queued asker. Dropped before reading its answer (its request was cancelled), it passes on
/// a lead it was handed.
struct InLine<'a, P: Probe> {
    coalescer: &'a Coalescer<P>,
    rx: Option<oneshot::Receiver<Answer>>,
}

impl<P: Probe> InLine<'_, P> {
    async fn wait(&mut self) -> Option<Answer> {
        let rx = self.rx.as_mut()?;
        let answer = rx.await.ok();
        self.rx = None;
        answer
    }
}

impl<P: Probe> Drop for InLine<'_, P> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if let Ok(Answer::Lead) = rx.try_recv() {
                self.coalescer.hand_over();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::sync::Semaphore;
    use tokio::task::JoinHandle;

    use super::*;

    /// A probe that records each batch and holds it until the test lets it through.
    struct HeldProbe {
        batches: Mutex<Vec<Vec<String>>>,
        gate: Semaphore,
        started: AtomicUsize,
        finished_ids: Vec<String>,
    }

    impl Probe for HeldProbe {
        fn finished_among(
            &self,
            ids: Vec<String>,
        ) -> BoxFuture<'_, Result<Vec<String>, IngestError>> {
            Box::pin(async move {
                self.started.fetch_add(1, Ordering::SeqCst);
                self.batches.lock().unwrap().push(ids.clone());
                self.gate.acquire().await.unwrap().forget();
                Ok(ids
                    .into_iter()
                    .filter(|id| self.finished_ids.contains(id))
                    .collect())
            })
        }
    }

    type Held = Arc<Coalescer<HeldProbe>>;

    fn coalescer(finished: &[&str]) -> Held {
        Arc::new(Coalescer::new(HeldProbe {
            batches: Mutex::default(),
            gate: Semaphore::new(0),
            started: AtomicUsize::new(0),
            finished_ids: finished.iter().map(|s| s.to_string()).collect(),
        }))
    }

    fn ask(c: &Held, id: &'static str) -> JoinHandle<bool> {
        let c = c.clone();
        tokio::spawn(async move { c.is_finished(id).await.unwrap() })
    }

    /// The ids of each probe so far, sorted within a probe.
    fn batches(c: &Held) -> Vec<Vec<String>> {
        let mut b = c.probe.batches.lock().unwrap().clone();
        for batch in &mut b {
            batch.sort();
        }
        b
    }

    async fn until_started(c: &Held, n: usize) {
        while c.probe.started.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn queued(c: &Held, n: usize) {
        while c.lock().waiting.len() < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn let_through(c: &Held, probes: usize) {
        c.probe.gate.add_permits(probes);
    }

    #[tokio::test]
    async fn a_lone_ask_probes_its_own_id_at_once() {
        let c = coalescer(&["evt_done"]);
        let_through(&c, 2);
        assert!(c.is_finished("evt_done").await.unwrap());
        assert!(!c.is_finished("evt_new").await.unwrap());
        assert_eq!(batches(&c), vec![vec!["evt_done"], vec!["evt_new"]]);
        assert!(!c.lock().leading);
    }

    #[tokio::test]
    async fn asks_queued_behind_a_probe_go_out_together_and_each_gets_its_own_answer() {
        let c = coalescer(&["evt_a", "evt_c"]);
        let first = ask(&c, "evt_first");
        until_started(&c, 1).await;
        let queued_asks = [ask(&c, "evt_a"), ask(&c, "evt_b"), ask(&c, "evt_c")];
        queued(&c, 3).await;
        let_through(&c, 2);
        assert!(!first.await.unwrap());
        let answers: Vec<bool> = futures_util::future::join_all(queued_asks)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(answers, [true, false, true]);
        assert_eq!(
            batches(&c),
            vec![vec!["evt_first"], vec!["evt_a", "evt_b", "evt_c"]]
        );
        assert!(!c.lock().leading);
    }

    #[tokio::test]
    async fn a_leader_is_answered_without_waiting_for_the_next_probe() {
        let c = coalescer(&["evt_first"]);
        let first = ask(&c, "evt_first");
        until_started(&c, 1).await;
        let next = ask(&c, "evt_next");
        queued(&c, 1).await;
        let_through(&c, 1);
        // The next probe is out and held, and the first answer is already there.
        assert!(first.await.unwrap());
        until_started(&c, 2).await;
        assert!(!next.is_finished());
        let_through(&c, 1);
        assert!(!next.await.unwrap());
        assert!(!c.lock().leading);
    }

    #[tokio::test]
    async fn a_cancelled_leader_hands_over_and_its_batch_asks_again() {
        let c = coalescer(&["evt_x", "evt_y"]);
        let first = ask(&c, "evt_first");
        until_started(&c, 1).await;
        let x = ask(&c, "evt_x");
        queued(&c, 1).await;
        let y = ask(&c, "evt_y");
        queued(&c, 2).await;
        // The first leader is cancelled mid-probe: evt_x leads, taking evt_y along.
        first.abort();
        let _ = first.await;
        until_started(&c, 2).await;
        assert_eq!(batches(&c)[1], vec!["evt_x", "evt_y"]);
        let z = ask(&c, "evt_z");
        queued(&c, 1).await;
        // That leader is cancelled too: evt_z leads, and evt_y, whose answer went with it,
        // asks on its own.
        x.abort();
        let _ = x.await;
        let_through(&c, 2);
        assert!(y.await.unwrap());
        assert!(!z.await.unwrap());
        assert!(!c.lock().leading);
        let mut rest = batches(&c).split_off(2);
        rest.sort();
        assert_eq!(rest, vec![vec!["evt_y"], vec!["evt_z"]]);
    }

    #[tokio::test]
    async fn a_queued_ask_cancelled_after_being_handed_the_lead_passes_it_on() {
        let c = coalescer(&[]);
        let (tx, rx) = oneshot::channel();
        let (tx_next, mut rx_next) = oneshot::channel();
        {
            let mut q = c.lock();
            q.leading = true;
            q.waiting.push_back(Waiter {
                event_id: "evt_gone".into(),
                answer: tx,
            });
            q.waiting.push_back(Waiter {
                event_id: "evt_next".into(),
                answer: tx_next,
            });
        }
        let in_line = InLine {
            coalescer: &*c,
            rx: Some(rx),
        };
        // The leader goes away and hands over to evt_gone, whose request is then dropped
        // before it reads the message.
        c.hand_over();
        drop(in_line);
        assert!(matches!(rx_next.try_recv(), Ok(Answer::Lead)));
        assert!(c.lock().leading);
        c.hand_over();
        assert!(!c.lock().leading);
    }
}
