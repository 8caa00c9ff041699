//! What dev shows. On a terminal, a block that is redrawn in place every second (shards by state,
//! events/s, queue depth, workers, REST requests and 429s), with what happens (a process
//! started, died, restarted; a reshard's steps; the autoscaler's decisions) printed above it.
//! Otherwise plain lines: the same happenings, and a summary when the shards' progress changes
//! and every ten seconds.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use crate::observe::Snapshot;

/// How often plain output repeats the summary.
const PLAIN_SUMMARY_EVERY: Duration = Duration::from_secs(10);

/// The view.
#[derive(Debug)]
pub struct View {
    live: bool,
    drawn: usize,
    last: Option<Snapshot>,
    last_summary: Option<(Instant, String)>,
    started: Instant,
}

impl View {
    /// A view redrawn in place (`live`) or printed as lines.
    #[must_use]
    pub fn new(live: bool) -> Self {
        Self {
            live,
            drawn: 0,
            last: None,
            last_summary: None,
            started: Instant::now(),
        }
    }

    /// Something that happened.
    pub fn notice(&mut self, text: &str) {
        let mut out = std::io::stdout().lock();
        if self.live {
            let _ = write!(out, "{}", erase(self.drawn));
            let _ = writeln!(out, "{} {text}", clock(self.started.elapsed()));
            self.drawn = 0;
            if let Some(snapshot) = &self.last {
                let block = render(snapshot, self.started.elapsed());
                self.drawn = block.lines().count();
                let _ = write!(out, "{block}");
            }
        } else {
            let _ = writeln!(out, "dev: {text}");
        }
        let _ = out.flush();
    }

    /// A new snapshot.
    pub fn update(&mut self, snapshot: Snapshot) {
        let mut out = std::io::stdout().lock();
        if self.live {
            let block = render(&snapshot, self.started.elapsed());
            let _ = write!(out, "{}{block}", erase(self.drawn));
            self.drawn = block.lines().count();
        } else {
            let line = summary(&snapshot);
            // The shards' progress and the workers are printed as they change; rates every 10 s.
            let progress = progress_key(&snapshot);
            let due = self
                .last_summary
                .as_ref()
                .is_none_or(|(at, key)| *key != progress || at.elapsed() >= PLAIN_SUMMARY_EVERY);
            if due {
                let _ = writeln!(out, "dev: {line}");
                self.last_summary = Some((Instant::now(), progress));
            }
        }
        let _ = out.flush();
        self.last = Some(snapshot);
    }

    /// Leaves the block as it is and moves below it (at the end).
    pub fn finish(&mut self) {
        self.drawn = 0;
    }
}

/// ANSI: up `lines`, then clear to the end of the screen.
fn erase(lines: usize) -> String {
    if lines == 0 {
        String::new()
    } else {
        format!("\x1b[{lines}A\r\x1b[J")
    }
}

fn clock(elapsed: Duration) -> String {
    let s = elapsed.as_secs();
    format!("[{:02}:{:02}]", s / 60, s % 60)
}

fn progress_key(s: &Snapshot) -> String {
    let shards: Vec<String> = s
        .shards
        .iter()
        .map(|(g, c)| format!("{g}:{}/{}", c.ready, c.total))
        .collect();
    format!(
        "{} {} {}/{} {:?}",
        shards.join(","),
        s.state.workers_desired,
        s.workers_ready,
        s.workers_running,
        s.state.blocked
    )
}

/// Shards of every generation, as `gen 1: 3/3 ready`.
fn shards_line(s: &Snapshot) -> String {
    if s.shards.is_empty() {
        return "none planned yet".to_owned();
    }
    let active = s.state.active.map(|a| a.number);
    s.shards
        .iter()
        .map(|(generation, c)| {
            let mut line = format!("gen {generation}: {}/{} ready", c.ready, c.total);
            if c.connecting > 0 {
                let _ = write!(line, ", {} identifying", c.connecting);
            }
            if c.waiting > 0 {
                let _ = write!(line, ", {} waiting", c.waiting);
            }
            if c.failed > 0 {
                let _ = write!(line, ", {} FAILED", c.failed);
            }
            if Some(*generation) != active {
                line.push_str(" (not publishing yet)");
            }
            line
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn queue(s: &Snapshot) -> String {
    s.state
        .pending
        .map_or_else(|| "unknown (no worker yet)".to_owned(), |p| p.to_string())
}

/// One line, for plain output.
#[must_use]
pub fn summary(s: &Snapshot) -> String {
    let mut line = format!(
        "shards {} · {:.1} events/s · queue {} · workers {}/{} ready (want {}) · REST {} \
         requests, {} answered 429, {} 429s from Discord",
        shards_line(s),
        s.events_per_second,
        queue(s),
        s.workers_ready,
        s.workers_running,
        s.state.workers_desired,
        s.rest_requests,
        s.rest_429s,
        s.upstream_429s
    );
    if let Some(blocked) = &s.state.blocked {
        let _ = write!(line, " · BLOCKED: {blocked}");
    }
    line
}

/// The block, for a terminal.
#[must_use]
pub fn render(s: &Snapshot, elapsed: Duration) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "── {} ── up {} ── Ctrl-C stops ──",
        s.bot,
        clock(elapsed).trim_matches(['[', ']'])
    );
    if let Some(blocked) = &s.state.blocked {
        let _ = writeln!(out, "  BLOCKED    {blocked}");
    }
    let _ = writeln!(out, "  shards     {}", shards_line(s));
    if let Some(r) = &s.state.reshard {
        let _ = writeln!(
            out,
            "  reshard    generation {} ({} shards): {}, {}/{} READY",
            r.generation, r.shards, r.phase, r.ready_shards, r.shards
        );
    }
    let _ = writeln!(
        out,
        "  events     {:.1}/s  ({} in the stream)",
        s.events_per_second, s.stream_messages
    );
    let _ = writeln!(out, "  queue      {} waiting for workers", queue(s));
    let _ = writeln!(
        out,
        "  workers    {} running, {} ready, {} wanted",
        s.workers_running, s.workers_ready, s.state.workers_desired
    );
    let _ = writeln!(
        out,
        "  REST       {} requests ({:.1}/s), {} answered 429, {} 429s from Discord",
        s.rest_requests, s.rest_per_second, s.rest_429s, s.upstream_429s
    );
    let restarts: u32 = s.processes.iter().map(|p| p.restarts).sum();
    let ready = s.processes.iter().filter(|p| p.ready).count();
    let _ = writeln!(
        out,
        "  processes  {} ({ready} ready), {restarts} restarts; logs in the state directory",
        s.processes.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::ShardCounts;
    use crate::runner::GenerationState;

    fn snapshot() -> Snapshot {
        let mut s = Snapshot {
            bot: "default/mybot".into(),
            events_per_second: 52.0,
            stream_messages: 3120,
            workers_running: 2,
            workers_ready: 1,
            rest_requests: 124,
            rest_429s: 2,
            ..Snapshot::default()
        };
        s.state.active = Some(GenerationState {
            number: 1,
            total: 3,
        });
        s.state.workers_desired = 2;
        s.state.pending = Some(17);
        s.shards.insert(
            1,
            ShardCounts {
                total: 3,
                ready: 1,
                connecting: 1,
                waiting: 1,
                failed: 0,
            },
        );
        s.shards.insert(
            2,
            ShardCounts {
                total: 4,
                ready: 4,
                ..ShardCounts::default()
            },
        );
        s
    }

    #[test]
    fn the_block_shows_shards_by_state_rates_queue_workers_and_rest() {
        let block = render(&snapshot(), Duration::from_secs(75));
        assert!(block.contains("up 01:15"), "{block}");
        assert!(
            block.contains(
                "gen 1: 1/3 ready, 1 identifying, 1 waiting; gen 2: 4/4 ready (not publishing yet)"
            ),
            "{block}"
        );
        assert!(
            block.contains("events     52.0/s  (3120 in the stream)"),
            "{block}"
        );
        assert!(block.contains("queue      17 waiting"), "{block}");
        assert!(block.contains("2 running, 1 ready, 2 wanted"), "{block}");
        assert!(block.contains("124 requests"), "{block}");
        assert!(block.contains("2 answered 429"), "{block}");
    }

    #[test]
    fn plain_summaries_say_the_same_in_one_line() {
        let line = summary(&snapshot());
        assert!(!line.contains('\n'));
        assert!(line.contains("queue 17"), "{line}");
        assert!(line.contains("workers 1/2 ready (want 2)"), "{line}");
    }

    #[test]
    fn erasing_moves_up_over_the_block() {
        assert_eq!(erase(0), "");
        assert_eq!(erase(7), "\x1b[7A\r\x1b[J");
    }
}
