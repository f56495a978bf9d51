//! Progress of long work: a bar (indicatif) when stderr is a terminal,
//! otherwise a plain line every few seconds, for logs and pipes.
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a plain line is written when no terminal shows a bar.
const LINE_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    bar: Option<ProgressBar>,
    what: &'static str,
    last: Option<Instant>,
}

impl Progress {
    /// Progress of `what` (e.g. "fsck"), counted in `unit`s.
    pub fn new(what: &'static str, unit: &'static str) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            let template = format!("{what}: [{{bar:30}}] {{pos}}/{{len}} {unit} ({{per_sec}}, {{eta}} left) {{msg}}");
            if let Ok(style) = ProgressStyle::with_template(&template) {
                b.set_style(style.progress_chars("=> "));
            }
            b
        });
        Progress { bar, what, last: None }
    }

    /// `done` of `total`, with `detail` beside it.
    pub fn show(&mut self, done: u64, total: u64, detail: impl FnOnce() -> String) {
        match &self.bar {
            Some(b) => {
                b.set_length(total);
                b.set_position(done);
                b.set_message(detail());
            }
            None if self.last.is_none_or(|t| t.elapsed() >= LINE_EVERY) => {
                self.last = Some(Instant::now());
                eprintln!("{}: {done}/{total} {}", self.what, detail());
            }
            None => {}
        }
    }

    /// Take the bar off the terminal.
    pub fn done(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
