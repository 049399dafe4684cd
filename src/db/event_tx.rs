//! The transaction one attempt on an event runs in, opened and closed without round trips of
//! their own: `begin` goes out in the same pipeline as the attempt's first statements and
//! `commit` right behind its last write (tokio-postgres' `Transaction` waits for each of the
//! two, two of the five round trips of a catalog event).
//!
//! The transaction owns its pooled connection. A connection given up while the transaction is
//! open (an error, a request cancelled mid-way) is closed instead of going back to the pool;
//! closing it makes the server roll the transaction back.

use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};

use deadpool_postgres::Client;

const BEGIN: &str = "start transaction";
const COMMIT: &str = "commit";

pub struct EventTx {
    client: Option<Client>,
    open: AtomicBool,
}

impl EventTx {
    /// Nothing is sent yet: the caller joins `begin` with the statements that follow it.
    pub fn new(client: Client) -> Self {
        Self {
            client: Some(client),
            open: AtomicBool::new(false),
        }
    }

    /// START TRANSACTION, sent when first polled: poll it first in a join with the statements
    /// that belong to the transaction, so it goes out ahead of them.
    pub async fn begin(&self) -> Result<(), tokio_postgres::Error> {
        self.open.store(true, Ordering::Relaxed);
        self.client().batch_execute(BEGIN).await
    }

    /// COMMIT, sent when first polled: poll it last in a join with the transaction's last
    /// statements. If one of them fails, the server has aborted the transaction and this
    /// COMMIT rolls it back (an error the caller sees in that statement's result).
    pub async fn commit(&self) -> Result<(), tokio_postgres::Error> {
        self.client().batch_execute(COMMIT).await?;
        self.open.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// The connection, for code written against `GenericClient`.
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("present until drop")
    }
}

impl Deref for EventTx {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client()
    }
}

impl Drop for EventTx {
    fn drop(&mut self) {
        if self.open.load(Ordering::Relaxed) {
            if let Some(client) = self.client.take() {
                drop(Client::take(client));
            }
        }
    }
}
