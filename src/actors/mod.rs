//! The runner's actors (Poller, Executor pool, Scheduler). Private: users
//! hold a handle, never an actor address.
