//! Cancellation signals of the tasks a runner is running: one shared set of
//! cancelled task ids and one wake-up for all of them, so a task costs no
//! allocation of its own; its body holds a [`CancelSignal`] (a shared
//! pointer and its id).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// The cancelled tasks of one runner.
#[derive(Debug, Default)]
pub(crate) struct Cancels {
    cancelled: Mutex<HashSet<i32>>,
    wake: Notify,
}

impl Cancels {
    fn set(&self) -> std::sync::MutexGuard<'_, HashSet<i32>> {
        self.cancelled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks `ids` cancelled and wakes the bodies waiting on a cancel;
    /// returns how many were not cancelled before.
    pub(crate) fn cancel(&self, ids: impl IntoIterator<Item = i32>) -> usize {
        let added = {
            let mut set = self.set();
            ids.into_iter().filter(|id| set.insert(*id)).count()
        };
        if added > 0 {
            self.wake.notify_waiters();
        }
        added
    }

    /// Forgets task `id` (it ended).
    pub(crate) fn forget(&self, id: i32) {
        self.set().remove(&id);
    }

    fn is_cancelled(&self, id: i32) -> bool {
        self.set().contains(&id)
    }
}

/// What a running body sees of its own cancellation.
#[derive(Clone, Debug)]
pub(crate) struct CancelSignal {
    cancels: Arc<Cancels>,
    id: i32,
}

impl CancelSignal {
    pub(crate) fn new(cancels: Arc<Cancels>, id: i32) -> Self {
        Self { cancels, id }
    }

    /// True once the task was cancelled.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancels.is_cancelled(self.id)
    }

    /// Resolves when the task is cancelled.
    pub(crate) async fn cancelled(&self) {
        loop {
            let woken = self.cancels.wake.notified();
            tokio::pin!(woken);
            // Registered before the check, so a cancel in between wakes it.
            woken.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            woken.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cancel_wakes_only_its_task() {
        let cancels = Arc::new(Cancels::default());
        let one = CancelSignal::new(Arc::clone(&cancels), 1);
        let two = CancelSignal::new(Arc::clone(&cancels), 2);
        let waiting = tokio::spawn({
            let one = one.clone();
            async move { one.cancelled().await }
        });
        assert_eq!(cancels.cancel([1, 1]), 1);
        waiting.await.unwrap();
        assert!(one.is_cancelled() && !two.is_cancelled());
        cancels.forget(1);
        assert!(!one.is_cancelled());
    }
}
