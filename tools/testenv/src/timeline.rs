//! A scenario's steps: each one's name, how long it took and its outcome, printed at the end.

use std::fmt::Display;
use std::path::Path;
use std::time::Instant;

/// Each step's name, seconds and outcome, printed when the scenario ends.
#[derive(Default)]
pub struct Timeline {
    steps: Vec<String>,
    current: Option<(String, Instant)>,
}

impl Timeline {
    /// Starts step `step`, printing what it does.
    pub fn begin(&mut self, step: &str, what: &str) {
        println!("==> {step}: {what}");
        self.current = Some((step.to_owned(), Instant::now()));
    }

    /// Ends the current step with its outcome.
    pub fn done(&mut self, outcome: impl Display) {
        if let Some((step, started)) = self.current.take() {
            self.steps.push(format!("{step:<12} {:>6.1}s  {outcome}", started.elapsed().as_secs_f64()));
        }
    }

    /// Prints every step; after a failure, the step that failed and where the logs are.
    pub fn print(&self, scenario: &str, succeeded: bool, dir: &Path) {
        let mut out = format!("\n{scenario} timeline:\n");
        for step in &self.steps {
            out.push_str(&format!("  {step}\n"));
        }
        if !succeeded {
            let step = self.current.as_ref().map_or("(between steps)", |(step, _)| step.as_str());
            out.push_str(&format!(
                "{scenario}: FAILED in step '{step}'; every component's log is in {}\n",
                dir.display()
            ));
        }
        print!("{out}");
    }
}
