//! `ufence top`: a live full-screen view of every process under ufence: pool use, samples and
//! skips per second, bugs, the interval in force, and a history graph of the selected
//! process. Keys as in top and htop: `q`, Esc or Ctrl-C quit; `s` or Tab changes the sort
//! column, `r` reverses it; the arrow keys select a process.

use crate::runtime::{self, Snapshot};
use clap::ArgMatches;
use crossterm::event::{self, Event, KeyCode, KeyEvent, KeyModifiers};
use crossterm::{cursor, execute, queue, style, terminal};
use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Points of history kept per process (one per refresh).
const HISTORY: usize = 120;

/// The columns a person can sort by.
const SORTS: [&str; 5] = ["pid", "pool", "samples/s", "skipped/s", "bugs"];

/// One process as shown in a frame.
struct Row {
    pid: u32,
    used: u64,
    slots: u64,
    samples_per_s: f64,
    skipped_per_s: f64,
    bugs: u64,
    interval_ms: u64,
    /// argv[0] cut to its file name, for the table.
    command: String,
    /// The whole command line, for the selected process's history line.
    full_command: String,
}

/// What the view remembers between frames.
#[derive(Default)]
struct Seen {
    /// Per pid: the last (total allocations, total skipped) and when they were read.
    last: HashMap<u32, (u64, u64, Instant)>,
    /// Per pid: samples per second and pool use (per mille), oldest first.
    history: HashMap<u32, VecDeque<(f64, u64)>>,
}

pub fn main(m: &ArgMatches) -> Result<u8, String> {
    let period = Duration::from_millis(*m.get_one::<u64>("interval").expect("defaulted"));
    if !std::io::stdout().is_terminal() {
        return Err("top needs a terminal; for scripts use `ufence stats --all`".into());
    }
    let dir = runtime::dir()?;
    let mut out = std::io::stdout();
    terminal::enable_raw_mode().map_err(|e| format!("cannot use the terminal: {e}"))?;
    let _ = execute!(out, terminal::EnterAlternateScreen, cursor::Hide);
    let result = run(&dir, period, &mut out);
    let _ = execute!(out, cursor::Show, terminal::LeaveAlternateScreen);
    let _ = terminal::disable_raw_mode();
    result.map(|_| 0)
}

fn run(dir: &std::path::Path, period: Duration, out: &mut impl Write) -> Result<(), String> {
    let mut seen = Seen::default();
    let (mut sort, mut reverse, mut selected) = (2usize, false, 0usize);
    // The selection follows its process when a re-sort moves it, as in htop.
    let mut selected_pid: Option<u32> = None;
    loop {
        let snaps: Vec<Snapshot> = runtime::list(dir)
            .into_iter()
            .filter_map(|(_, s)| s.ok())
            .filter(Snapshot::live)
            .collect();
        let mut rows: Vec<Row> = snaps.iter().map(|s| row(s, &mut seen)).collect();
        // Forget processes that are gone, so a long-running view does not grow.
        seen.last
            .retain(|pid, _| rows.iter().any(|r| r.pid == *pid));
        seen.history
            .retain(|pid, _| rows.iter().any(|r| r.pid == *pid));
        rows.sort_by(|a, b| {
            let o = match sort {
                0 => a.pid.cmp(&b.pid),
                1 => (a.used * 1000 / a.slots.max(1)).cmp(&(b.used * 1000 / b.slots.max(1))),
                2 => a.samples_per_s.total_cmp(&b.samples_per_s),
                3 => a.skipped_per_s.total_cmp(&b.skipped_per_s),
                _ => a.bugs.cmp(&b.bugs),
            };
            // Busiest first unless reversed; pids ascending unless reversed.
            let o = if sort == 0 { o } else { o.reverse() };
            if reverse {
                o.reverse()
            } else {
                o
            }
        });
        selected = selected_pid
            .and_then(|p| rows.iter().position(|r| r.pid == p))
            .unwrap_or(selected)
            .min(rows.len().saturating_sub(1));
        selected_pid = rows.get(selected).map(|r| r.pid);
        draw(out, &rows, &seen, sort, reverse, selected, dir).map_err(|e| e.to_string())?;
        // Wait for the next frame, answering keys meanwhile.
        let next = Instant::now() + period;
        while let Some(left) = next.checked_duration_since(Instant::now()) {
            if !event::poll(left).map_err(|e| e.to_string())? {
                break;
            }
            let Ok(Event::Key(KeyEvent {
                code, modifiers, ..
            })) = event::read()
            else {
                continue;
            };
            match code {
                KeyCode::Char('q') | KeyCode::Esc => return Ok(()),
                KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => return Ok(()),
                KeyCode::Char('s') | KeyCode::Tab | KeyCode::Right => {
                    sort = (sort + 1) % SORTS.len()
                }
                KeyCode::Left | KeyCode::BackTab => sort = (sort + SORTS.len() - 1) % SORTS.len(),
                KeyCode::Char('r') => reverse = !reverse,
                KeyCode::Up | KeyCode::Char('k') | KeyCode::Down | KeyCode::Char('j') => {
                    selected = if matches!(code, KeyCode::Up | KeyCode::Char('k')) {
                        selected.saturating_sub(1)
                    } else {
                        (selected + 1).min(rows.len().saturating_sub(1))
                    };
                    selected_pid = rows.get(selected).map(|r| r.pid);
                }
                _ => continue,
            }
            break;
        }
    }
}

fn row(s: &Snapshot, seen: &mut Seen) -> Row {
    let st = s.stats();
    let skipped = st.skipped_incompatible
        + st.skipped_capacity
        + st.skipped_covered
        + st.skipped_budget
        + st.skipped_filtered;
    let now = Instant::now();
    let (samples_per_s, skipped_per_s) = match seen.last.get(&s.pid()) {
        Some(&(a, k, t)) => {
            let dt = now.duration_since(t).as_secs_f64().max(1e-3);
            (
                st.total_allocations.saturating_sub(a) as f64 / dt,
                skipped.saturating_sub(k) as f64 / dt,
            )
        }
        None => (0.0, 0.0),
    };
    seen.last
        .insert(s.pid(), (st.total_allocations, skipped, now));
    let slots = s.header().nslots as u64;
    let h = seen.history.entry(s.pid()).or_default();
    h.push_back((samples_per_s, st.currently_allocated * 1000 / slots.max(1)));
    if h.len() > HISTORY {
        h.pop_front();
    }
    Row {
        pid: s.pid(),
        used: st.currently_allocated,
        slots,
        samples_per_s,
        skipped_per_s,
        bugs: st.total_bugs,
        interval_ms: st.sample_interval_ms,
        command: s.short_command(),
        full_command: s.cmdline(),
    }
}

/// A bar of `width` cells, `permille` of it full.
fn bar(permille: u64, width: usize) -> String {
    let full = (permille.min(1000) as usize * width + 500) / 1000;
    "█".repeat(full) + &"░".repeat(width - full)
}

/// A sparkline of `values`, scaled to their maximum.
fn spark(values: impl Iterator<Item = f64> + Clone, width: usize) -> String {
    const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let v: Vec<f64> = values.collect();
    let v = &v[v.len().saturating_sub(width)..];
    let max = v.iter().copied().fold(0.0, f64::max);
    v.iter()
        .map(|&x| {
            if max <= 0.0 {
                LEVELS[0]
            } else {
                LEVELS[((x / max) * 7.0).round().clamp(0.0, 7.0) as usize]
            }
        })
        .collect()
}

fn draw(
    out: &mut impl Write,
    rows: &[Row],
    seen: &Seen,
    sort: usize,
    reverse: bool,
    selected: usize,
    dir: &std::path::Path,
) -> std::io::Result<()> {
    let (cols, lines) = terminal::size().unwrap_or((100, 30));
    let (cols, lines) = (cols as usize, lines as usize);
    let mut text: Vec<String> = Vec::new();
    text.push(format!(
        // The runtime directory last: a long path is what a narrow terminal may cut.
        "ufence top: {} process{}   sort: {}{}   in {}",
        rows.len(),
        if rows.len() == 1 { "" } else { "es" },
        SORTS[sort],
        if reverse { " (reversed)" } else { "" },
        dir.display(),
    ));
    text.push("q quit  s/Tab sort  r reverse  Up/Down select".into());
    text.push(String::new());
    text.push(format!(
        "  {:>7}  {:<22}  {:>10}  {:>10}  {:>5}  {:>8}  COMMAND",
        "PID", "POOL", "SAMPLES/S", "SKIPPED/S", "BUGS", "INTERVAL"
    ));
    let table_room = lines.saturating_sub(10).max(1);
    for (i, r) in rows.iter().enumerate().take(table_room) {
        let mark = if i == selected { '>' } else { ' ' };
        let interval = if r.interval_ms > 0 {
            format!("{}ms", r.interval_ms)
        } else {
            "off".into()
        };
        text.push(format!(
            "{mark} {:>7}  {} {:>11}  {:>10.1}  {:>10.1}  {:>5}  {:>8}  {}",
            r.pid,
            bar(r.used * 1000 / r.slots.max(1), 10),
            format!("{}/{}", r.used, r.slots),
            r.samples_per_s,
            r.skipped_per_s,
            r.bugs,
            interval,
            r.command
        ));
    }
    if rows.is_empty() {
        text.push("  (no live process under ufence)".into());
    }
    if let Some(r) = rows.get(selected) {
        let width = cols.saturating_sub(16).clamp(10, HISTORY);
        let h = seen.history.get(&r.pid).cloned().unwrap_or_default();
        text.push(String::new());
        text.push(format!("history of {} ({}):", r.pid, r.full_command));
        text.push(format!(
            "  samples/s  {}",
            spark(h.iter().map(|p| p.0), width)
        ));
        text.push(format!(
            "  pool use   {}",
            spark(h.iter().map(|p| p.1 as f64), width)
        ));
    }
    queue!(
        out,
        cursor::MoveTo(0, 0),
        terminal::Clear(terminal::ClearType::All)
    )?;
    for (i, line) in text.iter().take(lines).enumerate() {
        let line: String = line.chars().take(cols).collect();
        queue!(out, cursor::MoveTo(0, i as u16), style::Print(line))?;
    }
    out.flush()
}
