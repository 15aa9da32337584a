//! Logging for the command line: tracing to stderr, or `--log-std`.

/// Logs to stderr through tracing; `RUST_LOG` filters (default `info`).
/// With `log_std`, what the process writes to stdout and stderr goes to the
/// log instead (info and error), as the seed's `--log-std` does.
pub(super) fn init(log_std: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, never in files or pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    #[cfg(unix)]
    if log_std && let Some(log_file) = std_redirect::start() {
        builder
            .with_writer(std::sync::Mutex::new(log_file))
            .try_init()
            .ok();
        return;
    }
    #[cfg(not(unix))]
    let _ = log_std;
    builder.with_writer(std::io::stderr).try_init().ok();
}

#[cfg(unix)]
mod std_redirect {
    //! `--log-std`: file descriptors 1 and 2 become pipes read by two
    //! threads that log each line; the log itself goes to a duplicate of the
    //! original stderr, so it does not loop back into the pipe.

    use std::fs::File;
    use std::io::{BufRead, BufReader};
    use std::os::fd::FromRawFd;

    /// Returns the log's destination (the original stderr), or `None` when
    /// the descriptors could not be redirected (logged, and stdout/stderr
    /// stay as they are).
    pub(super) fn start() -> Option<File> {
        // SAFETY: dup/pipe/dup2 on the process's own descriptors; each new
        // descriptor is owned by exactly one File created here.
        unsafe {
            let original = libc::dup(2);
            if original < 0 {
                return None;
            }
            for (fd, error_level) in [(1, false), (2, true)] {
                let mut ends = [0; 2];
                if libc::pipe(ends.as_mut_ptr()) != 0 || libc::dup2(ends[1], fd) < 0 {
                    return Some(File::from_raw_fd(original));
                }
                libc::close(ends[1]);
                let reader = File::from_raw_fd(ends[0]);
                std::thread::Builder::new()
                    .name(format!("log-std-{fd}"))
                    .spawn(move || {
                        for line in BufReader::new(reader).lines().map_while(Result::ok) {
                            if error_level {
                                tracing::error!(target: "stderr", "{line}");
                            } else {
                                tracing::info!(target: "stdout", "{line}");
                            }
                        }
                    })
                    .ok()?;
            }
            Some(File::from_raw_fd(original))
        }
    }
}
