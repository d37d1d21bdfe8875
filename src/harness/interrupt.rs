//! Ctrl-C (and SIGTERM): the first one asks the runner to finish the current image and stop; the second
//! abandons the current image at once. Files are written to a temporary name and renamed, so an abandoned
//! image leaves nothing behind but a temporary file that the next run removes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Exit status of a process abandoned by a second Ctrl-C (128 + SIGINT).
pub const ABANDON_EXIT_CODE: i32 = 130;

/// A shared interrupt counter.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    count: Arc<AtomicUsize>,
}

impl Interrupt {
    /// A counter no signal touches (library use, tests).
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs the process's Ctrl-C/SIGTERM handler. The second signal exits with
    /// [`ABANDON_EXIT_CODE`]. Fails if a handler was installed before.
    pub fn install() -> Result<Self, String> {
        let me = Self::new();
        let count = me.count.clone();
        ctrlc::set_handler(move || {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            if n == 1 {
                eprintln!("\ninterrupt: finishing the current image, then stopping (press Ctrl-C again to abandon it)");
            } else {
                eprintln!("\ninterrupt: abandoning the current image");
                std::process::exit(ABANDON_EXIT_CODE);
            }
        })
        .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
        Ok(me)
    }

    /// Asks to stop after the current image (what the first Ctrl-C does).
    pub fn request_stop(&self) {
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether a stop was asked for.
    pub fn stop_requested(&self) -> bool {
        self.count.load(Ordering::SeqCst) > 0
    }
}
