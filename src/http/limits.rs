//! What one client may hold on the public listener, so that slow or hostile clients cannot
//! take the endpoint away from Stripe.
//!
//! - The request head must arrive within `HTTP_HEAD_TIMEOUT_SECS` (actix's
//!   `client_request_timeout`, which covers the head only), then the whole body within
//!   `HTTP_BODY_TIMEOUT_SECS` (enforced here): a stalled client gets 408 and is disconnected.
//! - Bodies being buffered share a budget: the first `FREE_BYTES_PER_BODY` of each body are
//!   always allowed (a Stripe delivery is a few KiB), the rest comes from `BODY_BUFFER_BUDGET`;
//!   a body that finds the budget spent gets 503 at once and is disconnected. Buffered bodies
//!   therefore never exceed `connections × FREE_BYTES_PER_BODY + BODY_BUFFER_BUDGET`.
//! - At most `HTTP_MAX_CONNECTIONS` connections, lowered to fit the open-files limit with room
//!   for the database pool; beyond that new connections wait in the kernel's accept queue.
//! - An idle kept-alive connection is closed after `HTTP_KEEP_ALIVE_SECS`.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::http::header::CONTENT_LENGTH;
use actix_web::{dev, web, HttpMessage, HttpRequest};
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The largest body accepted (the contract's 413 limit).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Bytes of every body that do not count against the shared budget.
pub const FREE_BYTES_PER_BODY: usize = 16 * 1024;

/// Bytes beyond `FREE_BYTES_PER_BODY` that all bodies being read may hold together.
pub const BODY_BUFFER_BUDGET: usize = 8 * 1024 * 1024;

/// File descriptors kept for everything but client connections (listeners, the runtime,
/// logs, outgoing HTTP), on top of the database pool.
const RESERVED_DESCRIPTORS: usize = 64;

/// The body budget and deadline, shared by every request of the public listener.
#[derive(Clone)]
pub struct BodyLimits {
    budget: Arc<Semaphore>,
    pub timeout: Duration,
}

impl BodyLimits {
    pub fn new(timeout: Duration) -> Self {
        Self {
            budget: Arc::new(Semaphore::new(BODY_BUFFER_BUDGET)),
            timeout,
        }
    }
}

#[derive(Debug)]
pub enum BodyError {
    TooLarge,
    /// Not received within the body deadline.
    TimedOut,
    /// The shared budget is spent (many large bodies at once).
    Busy,
    Broken(String),
}

/// Reads the body within the deadline and the budget, never buffering more than the limit.
pub async fn read_body(
    req: &HttpRequest,
    payload: web::Payload,
    limits: &BodyLimits,
) -> Result<Vec<u8>, BodyError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(BodyError::TooLarge);
    }
    tokio::time::timeout(
        limits.timeout,
        read_within_budget(payload, declared, limits),
    )
    .await
    .unwrap_or(Err(BodyError::TimedOut))
}

async fn read_within_budget(
    mut payload: web::Payload,
    declared: Option<usize>,
    limits: &BodyLimits,
) -> Result<Vec<u8>, BodyError> {
    // Capacity grows with what arrives: a declared length alone reserves nothing.
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(FREE_BYTES_PER_BODY));
    let mut held: Option<OwnedSemaphorePermit> = None;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| BodyError::Broken(e.to_string()))?;
        let len = body.len() + chunk.len();
        if len > MAX_BODY_BYTES {
            return Err(BodyError::TooLarge);
        }
        // What is allocated counts (capacity grows by doubling), beyond the free part.
        let counted = |n: usize| n.saturating_sub(FREE_BYTES_PER_BODY);
        let before = body.capacity();
        let after = if len <= before {
            before
        } else {
            (before * 2).max(len).min(MAX_BODY_BYTES)
        };
        let more = counted(after) - counted(before);
        if more > 0 {
            // Bounded by MAX_BODY_BYTES, so it fits in u32.
            let permit = limits
                .budget
                .clone()
                .try_acquire_many_owned(more as u32)
                .map_err(|_| BodyError::Busy)?;
            match &mut held {
                Some(held) => held.merge(permit),
                None => held = Some(permit),
            }
        }
        if after > before {
            body.reserve_exact(after - body.len());
        }
        body.extend_from_slice(&chunk);
    }
    // The budget is given back here: what follows (verification, storage) works on a body
    // already read, whose size the connection cap bounds.
    Ok(body)
}

/// Keeps a request's body stream alive until its response has been sent, so that an answer
/// given before the body was read closes the connection. (actix otherwise keeps reading, with
/// no deadline, a chunked body whose stream was dropped: a client could hold the connection
/// forever.)
pub struct UnreadBodyGuard(#[allow(dead_code)] Rc<RefCell<dev::Payload>>);

/// Puts a shared body stream in `req`; `hold_until_sent` ties the guard to the answer.
pub fn guard_body(req: &mut dev::ServiceRequest) -> UnreadBodyGuard {
    let shared = Rc::new(RefCell::new(req.take_payload()));
    req.set_payload(dev::Payload::Stream {
        payload: Box::pin(SharedBody(shared.clone())),
    });
    UnreadBodyGuard(shared)
}

/// The answer's body, holding the request body's stream until the last byte is written
/// (actix decides about the connection at that moment).
pub fn hold_until_sent<B: MessageBody + 'static>(
    answer: dev::ServiceResponse<B>,
    guard: UnreadBodyGuard,
) -> dev::ServiceResponse<BoxBody> {
    answer.map_body(|_, body| {
        BoxBody::new(GuardedBody {
            body: BoxBody::new(body),
            _guard: guard,
        })
    })
}

struct GuardedBody {
    body: BoxBody,
    _guard: UnreadBodyGuard,
}

impl MessageBody for GuardedBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<web::Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}

struct SharedBody(Rc<RefCell<dev::Payload>>);

impl futures_util::Stream for SharedBody {
    type Item = Result<web::Bytes, actix_web::error::PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.borrow_mut().poll_next_unpin(cx)
    }
}

/// How many client connections fit: `requested`, lowered to leave the database pool and
/// `RESERVED_DESCRIPTORS` within the soft open-files limit (`ulimit -n`).
pub fn connection_cap(requested: usize, pool_size: usize) -> usize {
    let Some(limit) = open_files_limit() else {
        return requested;
    };
    let fits = limit
        .saturating_sub(pool_size + RESERVED_DESCRIPTORS)
        .max(1);
    if fits < requested {
        tracing::warn!(
            requested,
            open_files_limit = limit,
            allowed = fits,
            "HTTP_MAX_CONNECTIONS lowered to fit the open-files limit (raise ulimit -n to allow more)"
        );
    }
    requested.min(fits)
}

/// The soft RLIMIT_NOFILE, from /proc/self/limits (Linux).
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_files_limit(&limits)
}

fn parse_open_files_limit(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_open_files_limit_is_read() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_files_limit(text), Some(1024));
        assert_eq!(parse_open_files_limit("Max open files  unlimited  x"), None);
        assert!(open_files_limit().is_some());
    }

    #[test]
    fn connections_leave_room_for_the_pool() {
        let limit = open_files_limit().unwrap();
        assert_eq!(connection_cap(10, 16), 10.min(limit - 80));
        assert_eq!(connection_cap(usize::MAX, 16), limit - 80);
    }
}
