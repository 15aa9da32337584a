//! The Poller's watch for work enqueued by other processes, so an idle
//! runner starts a new task within milliseconds instead of at its next
//! poll (`--sleep`, 5 s by default), without claiming in a tight loop:
//!
//! - PostgreSQL: `LISTEN background_tasks`; a trigger (migration 4) sends
//!   one `NOTIFY` per inserting statement, Django's inserts included. The
//!   listening connection reconnects by itself; after any loss the Poller
//!   is woken once, for what was announced while it was away. Behind a
//!   transaction pooler (`pooler=transaction`), which cannot carry a
//!   `LISTEN`, it listens on the config's direct `listen_url` when there is
//!   one, and otherwise checks the newest task id as on MySQL.
//! - SQLite: `PRAGMA data_version`, which changes when another connection
//!   (another process) commits to the file: read from shared memory, no
//!   disk access. Checked every millisecond after a change, backing off to
//!   every [`SQLITE_IDLE`] while nothing happens.
//! - MySQL/MariaDB: `SELECT MAX(id)` on the primary key, a one-row index
//!   read, every 2 ms after a change, backing off to every
//!   [`Config::wake_probe`](crate::Config::wake_probe) (4 ms by default).
//!
//! Work that becomes due without a write (a scheduled `run_at` arriving, a
//! retry's backoff ending) is found by the Poller's regular poll.

use std::time::Duration;

use actix::prelude::*;
use sea_orm::DbBackend;
use sea_orm::sqlx::postgres::PgListener;

use super::poller::{Poller, Wake};
use crate::queue::Queue;
use crate::store::claim;

/// Longest pause between two SQLite checks while nothing changes.
pub(crate) const SQLITE_IDLE: Duration = Duration::from_millis(8);
/// Pause after a failed check or a lost listening connection.
const RETRY: Duration = Duration::from_secs(1);

/// Watches for new work until the Poller stops.
pub(crate) async fn watch(queue: Queue, poller: Addr<Poller>) {
    let probe_max = queue.config().wake_probe();
    match queue.db().get_database_backend() {
        DbBackend::Postgres if crate::db::pooler(queue.db()) == crate::db::Pooler::Transaction => {
            match queue.config().listen_url().map(str::to_owned) {
                Some(url) => listen(&queue, &poller, Some(&url)).await,
                None => probe(&queue, &poller, Duration::from_millis(2), probe_max).await,
            }
        }
        DbBackend::Postgres => listen(&queue, &poller, None).await,
        DbBackend::Sqlite => probe(&queue, &poller, Duration::from_millis(1), SQLITE_IDLE).await,
        _ => probe(&queue, &poller, Duration::from_millis(2), probe_max).await,
    }
}

/// Listens on a connection of the queue's pool, or on one to `direct`.
async fn listen(queue: &Queue, poller: &Addr<Poller>, direct: Option<&str>) {
    let channel = migration::NOTIFY_CHANNEL;
    let mut warned = false;
    while poller.connected() {
        let connected = match direct {
            Some(url) => PgListener::connect(url).await,
            None => PgListener::connect_with(queue.db().get_postgres_connection_pool()).await,
        };
        let mut listener = match connected {
            Ok(listener) => Listening(Some(listener)),
            Err(err) if direct.is_some() && !warned => {
                // A listen URL of the operator's that does not work is
                // worth a warning (once); wake-ups fall back to the poll.
                warned = true;
                tracing::warn!(
                    "cannot LISTEN on the listen URL ({}); new tasks are found by the poll \
                     (--sleep) until it works: {err}",
                    crate::db::redact(direct.unwrap_or_default())
                );
                tokio::time::sleep(RETRY).await;
                continue;
            }
            Err(err) => {
                tracing::debug!("cannot listen for new tasks yet; polling meanwhile: {err}");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let Some(listener) = listener.0.as_mut() else {
            return;
        };
        if let Err(err) = listener.listen(channel).await {
            tracing::debug!("cannot listen for new tasks yet; polling meanwhile: {err}");
            tokio::time::sleep(RETRY).await;
            continue;
        }
        // Anything inserted before LISTEN took effect was not announced.
        poller.do_send(Wake);
        loop {
            match listener.try_recv().await {
                Ok(Some(_)) => poller.do_send(Wake),
                Ok(None) => {
                    // Lost and reconnected: catch up on what was missed.
                    poller.do_send(Wake);
                }
                Err(err) => {
                    tracing::debug!("listening for new tasks stopped; reconnecting: {err}");
                    tokio::time::sleep(RETRY).await;
                    break;
                }
            }
            if !poller.connected() {
                return;
            }
        }
    }
}

/// A listener that can be dropped anywhere. Dropping a `PgListener` spawns
/// a task (to `UNLISTEN` and return its connection), which panics without a
/// Tokio runtime: when the runner's actors are dropped as the process exits,
/// the listener is instead left to the exit, which closes its connection.
struct Listening(Option<PgListener>);

impl Drop for Listening {
    fn drop(&mut self) {
        if tokio::runtime::Handle::try_current().is_err() {
            std::mem::forget(self.0.take());
        }
    }
}

/// Polls a cheap change marker, at `fastest` after a change and backing off
/// (doubling) to `slowest` while it stays the same.
async fn probe(queue: &Queue, poller: &Addr<Poller>, fastest: Duration, slowest: Duration) {
    let mut last = None;
    let mut pause = fastest;
    while poller.connected() {
        tokio::time::sleep(pause).await;
        match claim::change_marker(queue.db()).await {
            Ok(marker) if last != Some(marker) => {
                if last.is_some() {
                    poller.do_send(Wake);
                }
                last = Some(marker);
                pause = fastest;
            }
            Ok(_) => pause = (pause * 2).min(slowest),
            Err(err) => {
                tracing::debug!("cannot check for new tasks; polling meanwhile: {err}");
                pause = RETRY;
            }
        }
    }
}
