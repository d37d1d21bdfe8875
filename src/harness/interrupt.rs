//! Ctrl-C (and SIGTERM): the first one asks the runner to finish the current image and stop; the second
//! abandons the current image at once. Files are written to a temporary name and renamed, so an abandoned
//! image leaves nothing behind but a temporary file that the next run removes.
//!
//! Signals that arrive together are one request: `timeout` (and job schedulers) signal the process and then
//! its process group, so the process gets the same SIGINT or SIGTERM twice within microseconds, and taking the
//! second as "again" would abandon the image and skip the manifest that a single signal writes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Exit status of a process abandoned by a second Ctrl-C (128 + SIGINT).
pub const ABANDON_EXIT_CODE: i32 = 130;

/// Signals within this time of the first one are the same request (a person's second Ctrl-C comes later).
pub const SAME_REQUEST: Duration = Duration::from_millis(500);

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignalAction {
    /// The first: finish the current image, then stop.
    Stop,
    /// Sent together with the first (within [`SAME_REQUEST`]): nothing more.
    Same,
    /// A later one: abandon the current image now.
    Abandon,
}

/// The action of a signal arriving `now`, when the first arrived at `first` (`None`: this is the first).
fn signal_action(first: Option<Instant>, now: Instant) -> SignalAction {
    match first {
        None => SignalAction::Stop,
        Some(first) if now.saturating_duration_since(first) < SAME_REQUEST => SignalAction::Same,
        Some(_) => SignalAction::Abandon,
    }
}

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

    /// Installs the process's Ctrl-C/SIGTERM handler. A second signal, [`SAME_REQUEST`] or more after the
    /// first, exits with [`ABANDON_EXIT_CODE`]. Fails if a handler was installed before.
    pub fn install() -> Result<Self, String> {
        let me = Self::new();
        let count = me.count.clone();
        let first: OnceLock<Instant> = OnceLock::new();
        ctrlc::set_handler(move || {
            let now = Instant::now();
            match signal_action(first.get().copied(), now) {
                SignalAction::Stop => {
                    let _ = first.set(now);
                    count.fetch_add(1, Ordering::SeqCst);
                    eprintln!("\ninterrupt: finishing the current image, then stopping (press Ctrl-C again to abandon it)");
                }
                SignalAction::Same => {}
                SignalAction::Abandon => {
                    eprintln!("\ninterrupt: abandoning the current image");
                    std::process::exit(ABANDON_EXIT_CODE);
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_sent_together_are_one_request_and_a_later_one_abandons() {
        let t0 = Instant::now();
        assert_eq!(signal_action(None, t0), SignalAction::Stop);
        assert_eq!(
            signal_action(Some(t0), t0 + Duration::from_micros(50)),
            SignalAction::Same
        );
        assert_eq!(
            signal_action(Some(t0), t0 + SAME_REQUEST - Duration::from_millis(1)),
            SignalAction::Same
        );
        assert_eq!(
            signal_action(Some(t0), t0 + SAME_REQUEST),
            SignalAction::Abandon
        );
        assert_eq!(
            signal_action(Some(t0), t0 + Duration::from_secs(5)),
            SignalAction::Abandon
        );
    }
}
