//! App state for task bodies: values the app hands to the [`Registry`] once
//! (a database pool, an HTTP client, settings) and bodies read by type with
//! [`TaskContext::data`], in the spirit of actix-web's `web::Data`.
//!
//! A task lists the types it reads in [`Task::requires`], so that a missing
//! value is found when the runner starts ([`Registry::check`], called by
//! [`crate::Runner::start`] and `bgtasks process`), not when the first task
//! runs; and a body that reads a type it did not list gets an error even
//! when the value is there, so every read is covered by that check.
//!
//! [`Registry`]: crate::Registry
//! [`Registry::check`]: crate::Registry::check
//! [`Task::requires`]: crate::Task::requires
//! [`TaskContext::data`]: crate::TaskContext::data

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The app state a task's body reads: what [`crate::Task::requires`]
/// returns. A runner refuses to start while a registered task requires a
/// type the registry has no value of.
///
/// ```
/// use background_tasks::Requires;
/// # struct Pool; struct HttpClient;
/// let requires = Requires::new().data::<Pool>().data::<HttpClient>();
/// ```
#[derive(Clone, Default)]
pub struct Requires {
    types: Vec<StateType>,
}

impl Requires {
    /// Nothing: the default of [`crate::Task::requires`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `D`: the body reads it with `ctx.data::<D>()`, and the app
    /// gives it with `registry.data(value)`, a value of exactly this type.
    pub fn data<D: Send + Sync + 'static>(mut self) -> Self {
        let wanted = StateType::of::<D>();
        if !self.types.contains(&wanted) {
            self.types.push(wanted);
        }
        self
    }

    /// The names of the required types, in the order they were added.
    pub fn type_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.types.iter().map(|ty| ty.name)
    }

    pub(crate) fn types(&self) -> &[StateType] {
        &self.types
    }
}

impl fmt::Debug for Requires {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.type_names()).finish()
    }
}

/// A type of app state: its id (the key) and its name (for messages).
#[derive(Clone, Copy, Debug)]
pub(crate) struct StateType {
    id: TypeId,
    pub(crate) name: &'static str,
}

impl StateType {
    pub(crate) fn of<D: 'static>() -> Self {
        Self {
            id: TypeId::of::<D>(),
            name: std::any::type_name::<D>(),
        }
    }
}

impl PartialEq for StateType {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

/// The values given with [`crate::Registry::data`], by type. Cloning shares
/// the values: a running task keeps the map it started with while the app
/// adds or replaces values for later runs.
#[derive(Clone, Default)]
pub(crate) struct StateMap {
    values: HashMap<TypeId, (Arc<dyn Any + Send + Sync>, &'static str)>,
}

impl StateMap {
    /// Adds `value`, replacing an earlier value of the same type.
    pub(crate) fn insert<D: Send + Sync + 'static>(&mut self, value: D) {
        let ty = StateType::of::<D>();
        self.values.insert(ty.id, (Arc::new(value), ty.name));
    }

    pub(crate) fn contains(&self, ty: StateType) -> bool {
        self.values.contains_key(&ty.id)
    }

    pub(crate) fn get<D: 'static>(&self) -> Option<&D> {
        self.values
            .get(&TypeId::of::<D>())
            .and_then(|(value, _)| value.downcast_ref::<D>())
    }

    /// The names of the types it holds, sorted.
    pub(crate) fn type_names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.values.values().map(|(_, name)| *name).collect();
        names.sort_unstable();
        names
    }
}

impl fmt::Debug for StateMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.type_names()).finish()
    }
}

/// What a run's [`crate::TaskContext`] carries to read state: the
/// registry's values as they were when the run started, and what the task
/// declared.
#[derive(Clone, Debug)]
pub(crate) struct RunState {
    pub(crate) values: Arc<StateMap>,
    pub(crate) requires: Arc<Requires>,
}

/// A registered task that requires a type of app state the registry has no
/// value of; see [`crate::Error::MissingState`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingState {
    /// The task's name.
    pub task: String,
    /// The required type, as [`std::any::type_name`] spells it.
    pub type_name: &'static str,
}

/// The text of [`crate::Error::MissingState`]: every task and type, and
/// what to do.
pub(crate) fn missing_text(missing: &[MissingState]) -> String {
    let list = missing
        .iter()
        .map(|m| {
            format!(
                "task {:?} requires app state of type `{}`",
                m.task, m.type_name
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    format!(
        "{list}, and the registry has no value of that type. Give it with `registry.data(value)` \
         (a value of exactly that type) before starting the runner, or remove the type from the \
         task's `Task::requires`"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Pool(u8);

    #[test]
    fn values_are_found_by_their_exact_type() {
        let mut map = StateMap::default();
        map.insert(Pool(1));
        map.insert(Pool(2));
        assert_eq!(map.get::<Pool>().map(|p| p.0), Some(2), "replaced");
        assert!(
            map.get::<Arc<Pool>>().is_none(),
            "Arc<Pool> is another type"
        );
        assert!(map.contains(StateType::of::<Pool>()));
        assert!(!map.contains(StateType::of::<String>()));
    }

    #[test]
    fn requires_lists_each_type_once() {
        let requires = Requires::new()
            .data::<Pool>()
            .data::<String>()
            .data::<Pool>();
        assert_eq!(
            requires.type_names().collect::<Vec<_>>(),
            [std::any::type_name::<Pool>(), "alloc::string::String"]
        );
    }
}
