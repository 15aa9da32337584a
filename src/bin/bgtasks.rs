//! `bgtasks`: the bundled runner and operator binary. All of it is the
//! library's CLI; this file only chooses the tasks it knows: the built-in
//! ones (`bgtasks.noop`, `bgtasks.sleep`, `bgtasks.fail`, `bgtasks.reject`,
//! `bgtasks.echo`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let registry = background_tasks::Registry::new();
    background_tasks::builtin::register(&registry);
    background_tasks::cli::main(registry)
}
