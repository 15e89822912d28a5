//! Unit tests of `schedule` (kept apart so that the module stays under 600 lines).

use super::*;

/// 2024-01-01 was a Monday; ms of `day` days after it at `h:m` UTC.
fn at(day: u64, h: u64, m: u64) -> u64 {
    const MON: u64 = 1_704_067_200_000;
    MON + ((day * 24 + h) * 60 + m) * 60_000
}

fn sched(windows: &[&str], days: &[&str]) -> Schedule {
    let w: Vec<String> = windows.iter().map(|s| s.to_string()).collect();
    let d: Vec<String> = days.iter().map(|s| s.to_string()).collect();
    Schedule::compile(&w, &d, TimeZone::UTC).expect("valid schedule")
}

#[test]
fn window_is_half_open_and_next_open_is_found() {
    let s = sched(&["01:00-05:00"], &[]);
    assert!(!s.is_open(at(0, 0, 59)));
    assert!(s.is_open(at(0, 1, 0)));
    assert!(s.is_open(at(0, 4, 59)));
    assert!(!s.is_open(at(0, 5, 0)));
    let st = s.state(at(0, 6, 0));
    assert_eq!((st.in_window, st.next_open_ms), (false, Some(at(1, 1, 0))));
    let st = s.state(at(0, 2, 0));
    assert_eq!((st.in_window, st.closes_at_ms), (true, Some(at(0, 5, 0))));
}

#[test]
fn window_crossing_midnight_belongs_to_its_start_day() {
    // Fridays 22:00 to Saturday 02:00 only.
    let s = sched(&["22:00-02:00"], &["fri"]);
    assert!(s.is_open(at(4, 23, 0)));
    assert!(s.is_open(at(5, 1, 59)));
    assert!(!s.is_open(at(5, 2, 0)));
    assert!(!s.is_open(at(5, 23, 0)), "Saturday night is not Friday");
    assert!(
        !s.is_open(at(4, 1, 0)),
        "Friday early morning belongs to Thursday"
    );
    assert_eq!(s.state(at(5, 3, 0)).next_open_ms, Some(at(11, 22, 0)));
}

#[test]
fn several_windows_days_ranges_and_seconds() {
    let s = sched(
        &["08:00-09:00", "12:00:30-12:01", "23:00-24:00"],
        &["mon-fri"],
    );
    assert!(s.is_open(at(0, 8, 30)));
    assert!(!s.is_open(at(0, 12, 0)));
    assert!(s.is_open(at(0, 12, 0) + 30_000));
    assert!(s.is_open(at(4, 23, 59)));
    assert!(!s.is_open(at(5, 8, 30)), "saturday");
    // Friday 23:00-24:00 then nothing until Monday 08:00.
    assert_eq!(s.state(at(4, 23, 30)).closes_at_ms, Some(at(5, 0, 0)));
    assert_eq!(s.state(at(5, 0, 0)).next_open_ms, Some(at(7, 8, 0)));
    let wrap = sched(&["00:00-24:00"], &["sat-mon"]);
    assert!(wrap.is_open(at(6, 12, 0)) && wrap.is_open(at(0, 12, 0)));
    assert!(!wrap.is_open(at(1, 12, 0)));
}

#[test]
fn windows_follow_the_configured_time_zone() {
    // Berlin is UTC+1 in January: 01:00-05:00 local is 00:00-04:00 UTC.
    let Ok(tz) = time_zone("Europe/Berlin") else {
        eprintln!("no zoneinfo on this machine: skipped");
        return;
    };
    let s = Schedule::compile(&["01:00-05:00".into()], &[], tz).expect("valid");
    assert!(s.is_open(at(0, 0, 30)));
    assert!(!s.is_open(at(0, 4, 30)));
    assert!(time_zone("Mars/Olympus").is_err());
}

#[test]
fn status_line_says_when_the_window_opens() {
    let g = GateStatus {
        kind: "rule".into(),
        name: "0: logs/#".into(),
        window: sched(&["01:00-05:00"], &[]).state(at(0, 12, 0)),
        upstreams: vec!["tcp://10.0.0.5:1883".into()],
    };
    assert_eq!(
        g.line(at(0, 12, 0)),
        "rule 0: logs/#  out of window, opens 2024-01-02T01:00:00Z (in 13h 0m), \
             only via tcp://10.0.0.5:1883"
    );
}

#[test]
fn bad_windows_and_days_are_refused() {
    for w in [
        "1-5",
        "01:00",
        "25:00-26:00",
        "05:00-05:00",
        "24:00-01:00",
        "01:60-02:00",
    ] {
        let e = Schedule::compile(&[w.into()], &[], TimeZone::UTC).expect_err(w);
        assert_eq!(e.0, "windows", "{w}");
    }
    let e = Schedule::compile(&["01:00-02:00".into()], &["funday".into()], TimeZone::UTC)
        .expect_err("bad day");
    assert_eq!(e.0, "days");
    let e = Schedule::compile(&[], &[], TimeZone::UTC).expect_err("no windows");
    assert_eq!(e.0, "windows");
}
