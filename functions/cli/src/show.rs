//! Showing a run as it goes: a bar per step and one overall on a terminal (indicatif), plain
//! lines when the output is piped or logged, nothing with `--json` (only the final document).

use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
pub enum Progress {
    /// Bars on a terminal.
    Bars {
        /// Where the bars are drawn (and answers printed above them).
        multi: MultiProgress,
        /// The overall bar, then one per step.
        overall: ProgressBar,
        /// One per step.
        steps: Vec<ProgressBar>,
        /// Each step's answer so far (a model's, streamed).
        answers: Vec<String>,
    },
    /// One line per change that matters (a status, or a quarter of progress).
    Lines {
        /// The step titles.
        titles: Vec<String>,
        /// What was last printed per step: (status, quarter).
        printed: Vec<(String, u32)>,
        /// A streamed answer is being printed to stdout without its line ended yet.
        open_line: bool,
    },
    /// Nothing (`--json`).
    Quiet,
}

const PER_MILLE: u64 = 1000;

impl Progress {
    /// A display for `titles`: bars on a terminal, lines otherwise, nothing when `quiet`.
    pub fn new(titles: Vec<String>, quiet: bool) -> Progress {
        if quiet {
            return Progress::Quiet;
        }
        if !std::io::stderr().is_terminal() {
            let printed = vec![(String::new(), 0); titles.len()];
            return Progress::Lines {
                titles,
                printed,
                open_line: false,
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style =
            ProgressStyle::with_template("{prefix:>24.bold} [{bar:30}] {percent:>3}% {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        let bar = |prefix: String| {
            let b = multi.add(ProgressBar::new(PER_MILLE));
            b.set_style(style.clone());
            b.set_prefix(prefix);
            b
        };
        let overall = bar("overall".to_owned());
        let steps = titles.iter().map(|t| bar(short(t))).collect();
        Progress::Bars {
            multi,
            overall,
            steps,
            answers: vec![String::new(); titles.len()],
        }
    }

    /// Step `index` appended `text` to its answer (a `stepDelta`): on a terminal the bar shows
    /// its end while it grows and the whole answer is printed above the bars when the step
    /// ends; piped, the text goes to stdout as it comes.
    pub fn delta(&mut self, index: usize, text: &str, progress: f64) {
        match self {
            Progress::Bars {
                overall,
                steps,
                answers,
                ..
            } => {
                let (Some(bar), Some(answer)) = (steps.get(index), answers.get_mut(index)) else {
                    return;
                };
                answer.push_str(text);
                bar.set_position((progress.clamp(0.0, 1.0) * PER_MILLE as f64) as u64);
                let total: u64 = steps.iter().map(|b| b.position()).sum();
                overall.set_position(total / steps.len().max(1) as u64);
                let flat = answer.replace('\n', " ");
                let tail: Vec<char> = flat.chars().rev().take(40).collect();
                bar.set_message(tail.into_iter().rev().collect::<String>());
            }
            Progress::Lines { open_line, .. } => {
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
                *open_line = true;
            }
            Progress::Quiet => {}
        }
    }

    /// Step `index` starts another attempt: its answer so far is dropped.
    pub fn afresh(&mut self, index: usize) {
        match self {
            Progress::Bars { answers, .. } => {
                if let Some(answer) = answers.get_mut(index) {
                    answer.clear();
                }
            }
            Progress::Lines { open_line, .. } if *open_line => {
                println!();
                *open_line = false;
                eprintln!("(trying again)");
            }
            _ => {}
        }
    }

    /// Step `index` moved.
    pub fn step(&mut self, index: usize, status: &str, progress: f64, message: Option<&str>) {
        let done = if status == "succeeded" {
            1.0
        } else {
            progress.clamp(0.0, 1.0)
        };
        match self {
            Progress::Bars {
                multi,
                overall,
                steps,
                answers,
            } => {
                let Some(bar) = steps.get(index) else { return };
                if status != "running" {
                    if let Some(answer) = answers.get_mut(index).filter(|a| !a.is_empty()) {
                        let _ = multi.println(std::mem::take(answer));
                    }
                }
                bar.set_position((done * PER_MILLE as f64) as u64);
                bar.set_message(match (status, message) {
                    ("running", Some(m)) => m.to_owned(),
                    ("waiting", Some(m)) => format!("waiting {m}"),
                    (s, _) => s.to_owned(),
                });
                let total: u64 = steps.iter().map(|b| b.position()).sum();
                overall.set_position(total / steps.len().max(1) as u64);
            }
            Progress::Lines {
                titles,
                printed,
                open_line,
            } => {
                let Some(title) = titles.get(index) else {
                    return;
                };
                if *open_line && status != "running" {
                    println!();
                    *open_line = false;
                }
                let quarter = (done * 4.0) as u32;
                let last = &mut printed[index];
                if last.0 == status && last.1 == quarter {
                    return;
                }
                *last = (status.to_owned(), quarter);
                let of = titles.len();
                let percent = (done * 100.0).round();
                let message = message.map(|m| format!(" — {m}")).unwrap_or_default();
                eprintln!("[{}/{of}] {title}: {status} {percent}%{message}", index + 1);
            }
            Progress::Quiet => {}
        }
    }

    /// The run ended: bars stop where they are.
    pub fn finish(&self) {
        if let Progress::Bars { overall, steps, .. } = self {
            for bar in steps {
                bar.abandon();
            }
            overall.abandon();
        }
    }
}

/// What a waiting step says: when its wait ends (UTC), and how long that is from `now`
/// (`until 14:05:00 UTC, 1:30 left`).
pub fn wait_message(until: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let Ok(at) = chrono::DateTime::parse_from_rfc3339(until) else {
        return format!("until {until}");
    };
    let secs = (at.with_timezone(&chrono::Utc) - now).num_seconds().max(0);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let left = if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    };
    format!("until {} UTC, {left} left", at.format("%H:%M:%S"))
}

/// A title cut to fit the bar's label.
fn short(title: &str) -> String {
    if title.chars().count() <= 24 {
        return title.to_owned();
    }
    let cut: String = title.chars().take(23).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_says_when_it_ends_and_how_long_that_is() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-06T14:03:30Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            wait_message("2026-12-06T14:05:00Z", now),
            "until 14:05:00 UTC, 1:30 left"
        );
        assert_eq!(
            wait_message("2026-12-06T16:05:05.5Z", now),
            "until 16:05:05 UTC, 2:01:35 left"
        );
        assert_eq!(
            wait_message("2026-12-06T14:00:00Z", now),
            "until 14:00:00 UTC, 0:00 left"
        );
        assert_eq!(wait_message("soon", now), "until soon");
    }
}
