//! `bgtasks`: the bundled runner and operator binary. All of it is the
//! library's CLI; this file only chooses the tasks it knows.

use std::process::ExitCode;

fn main() -> ExitCode {
    background_tasks::cli::main(background_tasks::Registry::new())
}
