//! What the user sees on stderr: log lines (`tracing`, `-v`/`-q`/`RUST_LOG`) and progress bars
//! (`indicatif`, implementing the libraries' [`Progress`] seam). Log lines print above the bars
//! instead of through them.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use engram::runtime::progress::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Installs the log subscriber: `info` for engram's crates and `warn` for the others by
/// default, `-v` debug, `-vv` trace, `-q` warnings only; `RUST_LOG` (`EnvFilter` syntax)
/// overrides all of them. Lines go to stderr, above any progress bar of `bars`.
pub fn init_logging(verbose: u8, quiet: bool, bars: &Bars) {
    let default = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "warn,engram=info",
        (false, 1) => "info,engram=debug",
        (false, _) => "info,engram=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(AboveBars(bars.multi.clone()))
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(verbose > 0)
        .init();
}

/// A [`MakeWriter`] printing to stderr with the bars cleared for the line.
#[derive(Clone)]
struct AboveBars(MultiProgress);

impl Write for AboveBars {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for AboveBars {
    type Writer = AboveBars;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Progress bars on stderr, one line per pass still running (passes nest). Hidden when stderr
/// is not a terminal, with `--json` or `-q`. A pass of one unit draws nothing: a bar that
/// fills at once says nothing (e.g. `Editor::apply` on one request inside the CLI's own loop).
pub struct Bars {
    multi: MultiProgress,
    stack: Mutex<Vec<ProgressBar>>,
}

impl Bars {
    /// Bars drawn to stderr unless `hidden` or stderr is not a terminal.
    pub fn new(hidden: bool) -> Bars {
        let target = if hidden || !std::io::stderr().is_terminal() {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        Bars {
            multi: MultiProgress::with_draw_target(target),
            stack: Mutex::new(Vec::new()),
        }
    }

    /// Sets the innermost bar's trailing message (e.g. the training loss).
    pub fn message(&self, message: String) {
        if let Some(bar) = self.stack.lock().expect("bars").last() {
            bar.set_message(message);
        }
    }
}

impl Progress for Bars {
    fn start(&self, what: &str, total: u64) {
        let bar = match total {
            0 => {
                let bar = ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{spinner} {prefix} {elapsed} {msg}")
                        .expect("template"),
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            }
            1 => ProgressBar::hidden(),
            n => ProgressBar::new(n).with_style(
                ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {human_pos}/{human_len} {elapsed}<{eta} {msg}",
                )
                .expect("template")
                .progress_chars("=> "),
            ),
        };
        let bar = if total == 1 { bar } else { self.multi.add(bar) };
        bar.set_prefix(what.to_owned());
        self.stack.lock().expect("bars").push(bar);
    }

    fn advance(&self, n: u64) {
        if let Some(bar) = self.stack.lock().expect("bars").last() {
            bar.inc(n);
        }
    }

    fn finish(&self) {
        if let Some(bar) = self.stack.lock().expect("bars").pop() {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }
}
