//! The registry of task handlers, shared by the runner and by the code that
//! enqueues (a web app, the CLI).
//!
//! The runner claims only rows whose `task_name` is registered; rows of other
//! names stay for runners that know them. Registering a name again replaces
//! the earlier handler, as re-decorating does in the seed.
//!
//! The registry also holds the app state bodies read ([`Registry::data`],
//! see [`crate::state`]), and checks at start that every task has the state
//! it requires ([`Registry::check`]).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};

use crate::error::{Error, Result};
use crate::params::ParamsError;
use crate::state::{MissingState, Requires, RunState, StateMap};
use crate::task::{Task, TaskContext, TaskDefaults, TaskError};

/// The registry's app state, shared by its clones and its handlers. A
/// run takes the inner `Arc` (a snapshot); adding a value copies the map
/// when runs hold it, so they never see it change under them.
type SharedState = Arc<RwLock<Arc<StateMap>>>;

/// A task body erased to run from a stored row.
/// What a body's future resolves to: its result as JSON text (`None` for a
/// body that returns nothing), or its error.
pub(crate) type RunFuture = Pin<Box<dyn Future<Output = Result<Option<String>, TaskError>> + Send>>;

/// What the registry keeps per name.
pub(crate) trait Handler: Send + Sync {
    /// Definition-time defaults of the task.
    fn defaults(&self) -> &TaskDefaults;
    /// The app state its body reads ([`Task::requires`]).
    fn requires(&self) -> &Requires;
    /// Decodes `task_params` and runs the body. Params that do not decode
    /// (they no longer fit the params type, or hold what Rust cannot represent
    /// exactly, such as a lone surrogate) are an invalid-task error: retrying
    /// the same text cannot succeed.
    fn run(&self, task_params: &str, ctx: TaskContext) -> RunFuture;
    /// [`Task::key`] of the params `task_params` holds; `Ok(None)` when
    /// they do not decode (the run refuses them with the reason).
    fn key(&self, task_params: &str) -> Result<Option<String>, String>;
}

struct TypedHandler<T: Task> {
    task: Arc<T>,
    defaults: TaskDefaults,
    requires: Arc<Requires>,
    state: SharedState,
}

impl<T: Task> Handler for TypedHandler<T> {
    fn defaults(&self) -> &TaskDefaults {
        &self.defaults
    }

    fn requires(&self) -> &Requires {
        &self.requires
    }

    fn key(&self, task_params: &str) -> Result<Option<String>, String> {
        match T::decode(task_params) {
            Ok(params) => crate::task::key_of::<T>(&params),
            Err(_) => Ok(None),
        }
    }

    fn run(&self, task_params: &str, ctx: TaskContext) -> RunFuture {
        let task = Arc::clone(&self.task);
        let ctx = ctx.with_state(RunState {
            values: snapshot(&self.state),
            requires: Arc::clone(&self.requires),
        });
        let params = T::decode(task_params);
        Box::pin(async move {
            let params = params.map_err(|err| {
                let why = match err {
                    ParamsError::Decode { .. } | ParamsError::BothArgsAndKwargs { .. } => {
                        "no longer decode into its params type"
                    }
                    _ => "cannot be decoded",
                };
                TaskError::invalid(format!(
                    "the stored params of task {} {why}: {err}",
                    ctx.task_name()
                ))
            })?;
            let output = task.run(params, ctx).await?;
            Ok(result_json(&output))
        })
    }
}

/// `output` as the JSON stored in a history row's `result`; `None` when it
/// is `()` (or `null`). A value JSON cannot hold (a map with non-text keys)
/// is logged and not stored: the task still succeeded.
fn result_json<O: serde::Serialize>(output: &O) -> Option<String> {
    match serde_json::to_value(output) {
        Ok(serde_json::Value::Null) => None,
        Ok(value) => Some(value.to_string()),
        Err(err) => {
            tracing::warn!("a task's result cannot be stored as JSON and is dropped: {err}");
            None
        }
    }
}

/// Task handlers by name, and the app state their bodies read. Cheap to
/// clone; clones share the same map and state.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: Arc<RwLock<HashMap<String, Arc<dyn Handler>>>>,
    state: SharedState,
}

/// The state as it is now, for one run.
fn snapshot(state: &SharedState) -> Arc<StateMap> {
    Arc::clone(&state.read().unwrap_or_else(PoisonError::into_inner))
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `task` under [`Task::name`], replacing any earlier handler
    /// of that name.
    pub fn register<T: Task>(&self, task: T) -> &Self {
        let handler = TypedHandler {
            task: Arc::new(task),
            defaults: T::defaults(),
            requires: Arc::new(T::requires()),
            state: Arc::clone(&self.state),
        };
        self.handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(T::name().to_owned(), Arc::new(handler));
        self
    }

    /// Gives task bodies `value`, which they read with
    /// [`TaskContext::data`]`::<D>()`: a database pool, an HTTP client,
    /// settings. Values are found by their exact type (`D` and `Arc<D>`
    /// are two types), and a second value of one type replaces the first
    /// for the runs that start after it. A task lists the types it reads in
    /// [`Task::requires`]; [`crate::Runner::start`] refuses to start while
    /// one of them has no value here (see [`Registry::check`]).
    ///
    /// Give the state before starting the runner. The value lives as long
    /// as the registry: a value that holds this registry (a [`crate::Queue`]
    /// on it) keeps both alive for the life of the process.
    pub fn data<D: Send + Sync + 'static>(&self, value: D) -> &Self {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        Arc::make_mut(&mut state).insert(value);
        self
    }

    /// Checks that every registered task has the app state it requires
    /// ([`Task::requires`], given with [`Registry::data`]).
    /// [`crate::Runner::start`] and `bgtasks process` call it and refuse to
    /// start on its error; call it yourself to fail even sooner.
    ///
    /// # Errors
    /// [`Error::MissingState`], naming every task and missing type.
    pub fn check(&self) -> Result<()> {
        let state = snapshot(&self.state);
        let mut missing: Vec<MissingState> = self
            .read()
            .iter()
            .flat_map(|(name, handler)| {
                handler
                    .requires()
                    .types()
                    .iter()
                    .filter(|ty| !state.contains(**ty))
                    .map(|ty| MissingState {
                        task: name.clone(),
                        type_name: ty.name,
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        missing.sort_by(|a, b| (&a.task, a.type_name).cmp(&(&b.task, b.type_name)));
        Err(Error::MissingState { missing })
    }

    /// The app state as it is now (for an inline run).
    pub(crate) fn state(&self) -> Arc<StateMap> {
        snapshot(&self.state)
    }

    /// True when a handler is registered under `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.read().contains_key(name)
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().keys().cloned().collect();
        names.sort();
        names
    }

    /// Definition-time defaults of the task registered under `name`.
    pub fn defaults(&self, name: &str) -> Option<TaskDefaults> {
        self.read().get(name).map(|h| h.defaults().clone())
    }

    /// The key ([`Task::key`]) of a task of `name` with `task_params`;
    /// `Ok(None)` when `name` is not registered here.
    pub(crate) fn key(&self, name: &str, task_params: &str) -> Result<Option<String>, String> {
        let handler = self.read().get(name).cloned();
        handler.map_or(Ok(None), |handler| handler.key(task_params))
    }

    /// `f` of the defaults of `name`, read in place: the runner asks for
    /// every outcome it writes, so nothing is cloned.
    pub(crate) fn with_defaults<R>(
        &self,
        name: &str,
        f: impl FnOnce(&TaskDefaults) -> R,
    ) -> Option<R> {
        self.read().get(name).map(|handler| f(handler.defaults()))
    }

    pub(crate) fn handler(&self, name: &str) -> Option<Arc<dyn Handler>> {
        self.read().get(name).cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<dyn Handler>>> {
        self.handlers.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("names", &self.names())
            .field("data", &*snapshot(&self.state))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Schedule;

    struct First;
    impl Task for First {
        type Params = ();
        type Output = u8;
        fn name() -> &'static str {
            "shared.name"
        }
        async fn run(&self, _: (), _: TaskContext) -> Result<u8, TaskError> {
            Ok(1)
        }
    }

    struct Second;
    impl Task for Second {
        type Params = ();
        type Output = u8;
        fn name() -> &'static str {
            "shared.name"
        }
        fn defaults() -> TaskDefaults {
            TaskDefaults::new().schedule(Schedule::new().priority(7))
        }
        async fn run(&self, _: (), _: TaskContext) -> Result<u8, TaskError> {
            Ok(2)
        }
    }

    struct Unnamed;
    impl Task for Unnamed {
        type Params = ();
        type Output = ();
        async fn run(&self, _: (), _: TaskContext) -> Result<(), TaskError> {
            Ok(())
        }
    }

    #[test]
    fn registering_a_name_again_replaces_the_handler() {
        let registry = Registry::new();
        registry.register(First);
        assert_eq!(
            registry.defaults("shared.name").unwrap().schedule.priority,
            None
        );
        registry.register(Second);
        assert_eq!(registry.names(), ["shared.name"]);
        assert_eq!(
            registry.defaults("shared.name").unwrap().schedule.priority,
            Some(7)
        );
    }

    #[test]
    fn default_name_is_the_module_path_of_the_type() {
        assert_eq!(
            Unnamed::name(),
            "background_tasks::registry::tests::Unnamed"
        );
        let registry = Registry::new();
        registry.register(Unnamed);
        assert!(registry.contains("background_tasks::registry::tests::Unnamed"));
    }

    #[test]
    fn clones_share_one_map() {
        let registry = Registry::new();
        let clone = registry.clone();
        clone.register(First);
        assert!(registry.contains("shared.name"));
    }
}
