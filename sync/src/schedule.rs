//! Sync schedules: time windows such as `"01:00-05:00"` (several per schedule, crossing midnight
//! allowed, optional weekdays) read in the zone of `sync.timezone`, and the gates built from them:
//! a forward rule limited to windows and/or to some upstreams, an upstream limited to windows.
//! Everything is a pure function of a [`Clock`]'s time, so tests drive it with [`ManualClock`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::config::{SyncConfig, Upstream};

/// Source of wall-clock time for schedules (injectable for tests).
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        edge_mqtt::util::now_ms()
    }
}

/// A clock that only moves when told to (tests).
#[derive(Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn new(ms: u64) -> ManualClock {
        ManualClock(AtomicU64::new(ms))
    }
    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// `schedule = { windows = ["01:00-05:00", "22:00-23:30"], days = ["mon-fri"] }`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// `HH:MM-HH:MM` (or with seconds, `HH:MM:SS`), local to `sync.timezone`; an end at or
    /// before the start crosses midnight, `24:00` is the end of the day. Required, at least one.
    pub windows: Vec<String>,
    /// Days a window may start on: `mon` .. `sun`, or ranges such as `mon-fri`; default every day.
    /// A window crossing midnight belongs to the day it starts on.
    pub days: Vec<String>,
}

/// `[[sync.upstream_schedule]]`: an upstream used only inside its windows.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamScheduleConfig {
    /// One of `sync.upstreams`, as written there (compared after parsing).
    pub upstream: String,
    pub windows: Vec<String>,
    pub days: Vec<String>,
}

const DAY_SECS: u32 = 86_400;
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// One window, in seconds of the (local) day; `end <= start` crosses midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

/// A compiled schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    spans: Vec<Span>,
    /// Monday first.
    days: [bool; 7],
    tz: TimeZone,
}

/// Where a schedule stands at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct WindowState {
    pub in_window: bool,
    /// When the next window opens (out of a window), ms since the epoch.
    pub next_open_ms: Option<u64>,
    /// When the current window closes (in a window), ms since the epoch.
    pub closes_at_ms: Option<u64>,
}

/// `sync.timezone`: `UTC` (default), `local` (the system's zone: `TZ` or /etc/localtime, with
/// its daylight-saving rules) or an IANA name such as `Europe/Berlin` (from the system's
/// zoneinfo files).
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    match name {
        "UTC" | "utc" | "" => Ok(TimeZone::UTC),
        // No zone configured on the system (no TZ, no /etc/localtime) means UTC to libc too.
        "local" => Ok(TimeZone::try_system().unwrap_or_else(|e| {
            tracing::warn!("sync.timezone = \"local\": no system time zone ({e}); using UTC");
            TimeZone::UTC
        })),
        _ => TimeZone::get(name).map_err(|e| format!("`{name}`: unknown time zone ({e})")),
    }
}

fn parse_time(s: &str) -> Option<u32> {
    let mut parts = s.split(':');
    let h: u32 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let sec: u32 = match parts.next() {
        Some(x) => x.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() || m > 59 || sec > 59 {
        return None;
    }
    let t = h * 3600 + m * 60 + sec;
    (t <= DAY_SECS).then_some(t)
}

fn parse_span(s: &str) -> Result<Span, String> {
    let bad = || format!("`{s}`: expected HH:MM-HH:MM (00:00..24:00, optional :SS)");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let start = parse_time(a.trim()).ok_or_else(bad)?;
    let end = parse_time(b.trim()).ok_or_else(bad)?;
    if start == DAY_SECS {
        return Err(format!("`{s}`: a window cannot start at 24:00"));
    }
    if start == end {
        return Err(format!(
            "`{s}`: empty window (use 00:00-24:00 for the whole day)"
        ));
    }
    Ok(Span { start, end })
}

fn parse_days(days: &[String]) -> Result<[bool; 7], (String, String)> {
    if days.is_empty() {
        return Ok([true; 7]);
    }
    let idx = |d: &str| {
        DAY_NAMES
            .iter()
            .position(|n| d.eq_ignore_ascii_case(n))
            .ok_or_else(|| {
                (
                    "days".to_string(),
                    format!("`{d}`: expected mon, tue, wed, thu, fri, sat, sun or a range mon-fri"),
                )
            })
    };
    let mut out = [false; 7];
    for d in days {
        match d.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (idx(a.trim())?, idx(b.trim())?);
                let mut i = a;
                loop {
                    out[i] = true;
                    if i == b {
                        break;
                    }
                    i = (i + 1) % 7;
                }
            }
            None => out[idx(d.trim())?] = true,
        }
    }
    Ok(out)
}

impl Schedule {
    /// Compiles windows and days; `Err((sub_key, message))` names `windows` or `days`.
    pub fn compile(
        windows: &[String],
        days: &[String],
        tz: TimeZone,
    ) -> Result<Schedule, (String, String)> {
        if windows.is_empty() {
            return Err((
                "windows".into(),
                "required: at least one window such as \"01:00-05:00\"".into(),
            ));
        }
        let spans = windows
            .iter()
            .map(|w| parse_span(w))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ("windows".to_string(), e))?;
        Ok(Schedule {
            spans,
            days: parse_days(days)?,
            tz,
        })
    }

    fn civil(&self, ms: u64) -> DateTime {
        let ts =
            Timestamp::from_millisecond(ms.min(i64::MAX as u64) as i64).unwrap_or(Timestamp::MAX);
        ts.to_zoned_datetime(self.tz.clone()).datetime()
    }

    /// Is `ms` (since the epoch) inside a window?
    pub fn is_open(&self, ms: u64) -> bool {
        let dt = self.civil(ms);
        let sod = dt.hour() as u32 * 3600 + dt.minute() as u32 * 60 + dt.second() as u32;
        let wd = dt.weekday().to_monday_zero_offset() as usize;
        let yesterday = (wd + 6) % 7;
        self.spans.iter().any(|s| {
            if s.start < s.end {
                self.days[wd] && s.start <= sod && sod < s.end
            } else {
                (self.days[wd] && sod >= s.start) || (self.days[yesterday] && sod < s.end)
            }
        })
    }

    /// The instant (ms) of `secs` into the day `date` (24:00 = next midnight), in the zone.
    fn instant(&self, date: Date, secs: u32) -> Option<u64> {
        let (date, secs) = if secs >= DAY_SECS {
            (date.tomorrow().ok()?, secs - DAY_SECS)
        } else {
            (date, secs)
        };
        let dt = date.at(
            (secs / 3600) as i8,
            (secs / 60 % 60) as i8,
            (secs % 60) as i8,
            0,
        );
        let z = dt.to_zoned_datetime(self.tz.clone()).ok()?;
        u64::try_from(z.timestamp().as_millisecond()).ok()
    }

    /// Open or closed at `ms`, and when that changes next (looked for over the next 8 days).
    pub fn state(&self, ms: u64) -> WindowState {
        let open = self.is_open(ms);
        let today = self.civil(ms).date();
        let mut edges: Vec<u64> = Vec::new();
        for d in -1i64..=8 {
            let Ok(date) = today.checked_add(jiff::Span::new().days(d)) else {
                continue;
            };
            for s in &self.spans {
                edges.extend(self.instant(date, s.start));
                let end = if s.end <= s.start {
                    s.end + DAY_SECS
                } else {
                    s.end
                };
                edges.extend(self.instant(date, end));
            }
        }
        edges.retain(|&e| e > ms);
        edges.sort_unstable();
        edges.dedup();
        let next = edges.into_iter().find(|&e| self.is_open(e) != open);
        WindowState {
            in_window: open,
            next_open_ms: if open { None } else { next },
            closes_at_ms: if open { next } else { None },
        }
    }
}

/// The gate of one forward rule: its windows and the upstreams it may use.
#[derive(Debug, Clone)]
pub struct RuleGate {
    pub schedule: Option<Schedule>,
    /// Indexes into `sync.upstreams`; `None`: any.
    pub upstreams: Option<Vec<usize>>,
}

impl RuleGate {
    pub fn open(&self, now_ms: u64, upstream: Option<usize>) -> bool {
        let time_ok = self.schedule.as_ref().is_none_or(|s| s.is_open(now_ms));
        let up_ok = match (&self.upstreams, upstream) {
            (None, _) => true,
            (Some(list), Some(u)) => list.contains(&u),
            (Some(_), None) => false,
        };
        time_ok && up_ok
    }
}

/// All gates of a configuration, compiled once.
#[derive(Debug, Clone, Default)]
pub struct Gates {
    /// Per forward rule (index), `None` when the rule is not gated.
    pub rules: Vec<Option<RuleGate>>,
    /// The (expanded) filter of each forward rule, the key gated records are stored under.
    pub filters: Vec<String>,
    /// Per upstream (index), `None` when it is always usable.
    pub upstreams: Vec<Option<Schedule>>,
}

/// The index of `addr` in `sync.upstreams` (compared after parsing).
pub fn upstream_index(cfg: &SyncConfig, addr: &str) -> Option<usize> {
    let parsed: Upstream = crate::config::parse_upstream(addr).ok()?;
    cfg.upstreams.iter().position(|u| *u == parsed)
}

impl Gates {
    /// Compiles the schedules of a configuration `SyncConfig::validate` accepted (an error is
    /// returned as `(key, message)`, never ignored).
    pub fn compile(cfg: &SyncConfig) -> Result<Gates, (String, String)> {
        let tz = time_zone(&cfg.timezone).map_err(|e| ("sync.timezone".to_string(), e))?;
        let mut rules = Vec::with_capacity(cfg.forward.len());
        for (i, r) in cfg.forward.iter().enumerate() {
            let k = |f: &str| format!("sync.forward[{i}].{f}");
            if r.schedule.is_none() && r.upstreams.is_none() {
                rules.push(None);
                continue;
            }
            let schedule = r
                .schedule
                .as_ref()
                .map(|s| Schedule::compile(&s.windows, &s.days, tz.clone()))
                .transpose()
                .map_err(|(sub, m)| (k(&format!("schedule.{sub}")), m))?;
            let upstreams = match &r.upstreams {
                None => None,
                Some(list) if list.is_empty() => {
                    return Err((
                        k("upstreams"),
                        "at least one address of sync.upstreams (or leave it out)".into(),
                    ))
                }
                Some(list) => Some(
                    list.iter()
                        .map(|a| {
                            upstream_index(cfg, a).ok_or_else(|| {
                                (
                                    k("upstreams"),
                                    format!("`{a}` is not one of sync.upstreams"),
                                )
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                ),
            };
            rules.push(Some(RuleGate {
                schedule,
                upstreams,
            }));
        }
        let mut upstreams: Vec<Option<Schedule>> = vec![None; cfg.upstreams.len()];
        for (i, u) in cfg.upstream_schedule.iter().enumerate() {
            let k = |f: &str| format!("sync.upstream_schedule[{i}].{f}");
            let idx = upstream_index(cfg, &u.upstream).ok_or_else(|| {
                (
                    k("upstream"),
                    format!("`{}` is not one of sync.upstreams", u.upstream),
                )
            })?;
            if upstreams[idx].is_some() {
                return Err((
                    k("upstream"),
                    format!("`{}` already has a schedule", u.upstream),
                ));
            }
            let s = Schedule::compile(&u.windows, &u.days, tz.clone())
                .map_err(|(sub, m)| (k(&sub), m))?;
            upstreams[idx] = Some(s);
        }
        Ok(Gates {
            rules,
            filters: cfg.forward.iter().map(|r| cfg.expand(&r.filter)).collect(),
            upstreams,
        })
    }

    /// No rule and no upstream has a schedule or gate.
    pub fn is_empty(&self) -> bool {
        !self.any_rule_gated() && self.upstreams.iter().all(Option::is_none)
    }

    pub fn any_rule_gated(&self) -> bool {
        self.rules.iter().any(Option::is_some)
    }

    /// Filters of the gated rules closed at `now_ms` for a session on `upstream`.
    pub fn closed_filters(&self, now_ms: u64, upstream: Option<usize>) -> HashSet<String> {
        self.rules
            .iter()
            .zip(&self.filters)
            .filter(|(g, _)| g.as_ref().is_some_and(|g| !g.open(now_ms, upstream)))
            .map(|(_, f)| f.clone())
            .collect()
    }

    /// May `upstream` be used at `now_ms`?
    pub fn upstream_open(&self, upstream: usize, now_ms: u64) -> bool {
        match self.upstreams.get(upstream) {
            Some(Some(s)) => s.is_open(now_ms),
            _ => true,
        }
    }

    /// When the earliest closed upstream window opens (ms), if any schedule says.
    pub fn next_upstream_open(&self, now_ms: u64) -> Option<u64> {
        self.upstreams
            .iter()
            .flatten()
            .filter_map(|s| s.state(now_ms).next_open_ms)
            .min()
    }
}

/// Status of one schedule (a rule's or an upstream's).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct GateStatus {
    /// `rule` (index in sync.forward) or `upstream` (its address).
    pub kind: String,
    pub name: String,
    #[serde(flatten)]
    pub window: WindowState,
    /// Upstreams a rule may use (empty: any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<String>,
}

impl Gates {
    /// One entry per gated rule and scheduled upstream, at `now_ms`.
    pub fn status(&self, cfg: &SyncConfig, now_ms: u64) -> Vec<GateStatus> {
        let always = WindowState {
            in_window: true,
            ..WindowState::default()
        };
        let mut out = Vec::new();
        for (i, g) in self.rules.iter().enumerate() {
            let Some(g) = g else { continue };
            out.push(GateStatus {
                kind: "rule".into(),
                name: format!("{i}: {}", self.filters.get(i).map_or("", |f| f.as_str())),
                window: g.schedule.as_ref().map_or(always, |s| s.state(now_ms)),
                upstreams: g
                    .upstreams
                    .iter()
                    .flatten()
                    .filter_map(|&u| cfg.upstreams.get(u).map(|u| u.to_string()))
                    .collect(),
            });
        }
        for (i, s) in self.upstreams.iter().enumerate() {
            let Some(s) = s else { continue };
            out.push(GateStatus {
                kind: "upstream".into(),
                name: cfg
                    .upstreams
                    .get(i)
                    .map(|u| u.to_string())
                    .unwrap_or_default(),
                window: s.state(now_ms),
                upstreams: Vec::new(),
            });
        }
        out
    }
}

impl GateStatus {
    /// One line for `robustmq-edge sync status`, e.g.
    /// `rule 2: logs/#  out of window, opens 2026-12-02T01:00:00Z (in 14h 25m)`.
    pub fn line(&self, now_ms: u64) -> String {
        let when = |ms: u64| {
            let t = Timestamp::from_millisecond(ms.min(i64::MAX as u64) as i64)
                .map(|t| t.to_string())
                .unwrap_or_else(|_| ms.to_string());
            let mins = ms.saturating_sub(now_ms) / 60_000;
            format!("{t} (in {}h {}m)", mins / 60, mins % 60)
        };
        let state = match (
            self.window.in_window,
            self.window.next_open_ms,
            self.window.closes_at_ms,
        ) {
            (true, _, Some(c)) => format!("in window, closes {}", when(c)),
            (true, _, None) => "in window".to_string(),
            (false, Some(o), _) => format!("out of window, opens {}", when(o)),
            (false, None, _) => "out of window, no window in the next 8 days".to_string(),
        };
        let via = if self.upstreams.is_empty() {
            String::new()
        } else {
            format!(", only via {}", self.upstreams.join(", "))
        };
        format!("{} {}  {state}{via}", self.kind, self.name)
    }
}

#[cfg(test)]
mod tests;
