//! Progress bars (indicatif): the overall job count with ETA, and the current image's method and step.
//! Hidden when stderr is not a terminal.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::generator::StepReporter;

/// The bars of one generation or evaluation pass.
pub struct Progress {
    _multi: MultiProgress,
    overall: ProgressBar,
    step: ProgressBar,
}

impl Progress {
    /// Bars for `total` jobs; `visible = false` draws nothing.
    pub fn new(total: usize, title: &str, visible: bool) -> Self {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let overall = multi.add(ProgressBar::new(total as u64));
        overall.set_style(
            ProgressStyle::with_template("{prefix:>9} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} images, ETA {eta}  {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        overall.set_prefix(title.to_string());
        let step = multi.add(ProgressBar::new(1));
        step.set_style(
            ProgressStyle::with_template("{prefix:>9} {bar:30.green/white} {pos}/{len} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        step.set_prefix("current");
        overall.enable_steady_tick(Duration::from_millis(500));
        Self {
            _multi: multi,
            overall,
            step,
        }
    }

    /// A new current item (e.g. `clora[step_size=10] | a cat and a dog | seed 0`).
    pub fn start(&self, what: &str) {
        self.overall.set_message(what.to_string());
        self.step.set_position(0);
        self.step.set_length(1);
        self.step.set_message("starting");
    }

    /// One item done (or skipped).
    pub fn advance(&self) {
        self.overall.inc(1);
    }

    /// Prints a line above the bars (nothing when hidden).
    pub fn println(&self, line: &str) {
        self.overall.println(line);
    }

    pub fn finish(&self) {
        self.step.finish_and_clear();
        self.overall.finish();
    }
}

impl StepReporter for Progress {
    fn step(&self, done: usize, total: usize, what: &str) {
        self.step.set_length(total.max(1) as u64);
        self.step.set_position(done as u64);
        self.step.set_message(what.to_string());
    }
}
