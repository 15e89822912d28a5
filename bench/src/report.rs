//! `report`: turns the JSON lines written by scripts/bench.sh (labels `ours:...`, `ours-none:...`,
//! `mosq:...`) into markdown tables: metric, robustmq-edge, mosquitto, ratio and target status.
//! A cell from an invalid run (lost messages, errors) shows INVALID and never a number.

use std::collections::HashMap;

use serde_json::Value;

type Results = HashMap<String, Value>;

pub fn load(text: &str) -> Results {
    let mut m = HashMap::new();
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line) {
            if let Some(l) = v.get("label").and_then(Value::as_str) {
                m.insert(l.to_string(), v);
            }
        }
    }
    m
}

/// Looks up a dotted field path ("latency_us.p99").
fn field(v: &Value, path: &str) -> Option<f64> {
    let mut cur = v;
    for p in path.split('.') {
        cur = cur.get(p)?;
    }
    cur.as_f64()
}

enum Cell {
    Num(f64),
    Invalid(String),
    Missing,
}

/// A label may be measured in rounds (`label:r1`, `label:r2`, ...): the cell is then the median of
/// the rounds, and INVALID if any round is.
fn cell(r: &Results, label: &str, path: &str) -> Cell {
    let Some(v) = r.get(label) else {
        let prefix = format!("{label}:r");
        let mut rounds: Vec<&String> = r
            .keys()
            .filter(|k| {
                k.strip_prefix(&prefix)
                    .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
            })
            .collect();
        if rounds.is_empty() {
            return Cell::Missing;
        }
        rounds.sort();
        let mut vals = Vec::new();
        for k in rounds {
            match cell(r, k, path) {
                Cell::Num(x) => vals.push(x),
                other => return other,
            }
        }
        vals.sort_by(f64::total_cmp);
        return Cell::Num(vals[vals.len() / 2]);
    };
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        if v.get("valid").is_none() {
            return Cell::Invalid(e.chars().take(60).collect());
        }
    }
    if v.get("valid").and_then(Value::as_bool) == Some(false) {
        let missing = v.get("missing").and_then(Value::as_u64).unwrap_or(0);
        let dups = v.get("duplicates").and_then(Value::as_u64).unwrap_or(0);
        return Cell::Invalid(format!("missing {missing}, dup {dups}"));
    }
    if v.get("test").and_then(Value::as_str) == Some("connections")
        && v.get("failed").and_then(Value::as_u64).unwrap_or(0) > 0
    {
        let f = v.get("failed").and_then(Value::as_u64).unwrap_or(0);
        return Cell::Invalid(format!("{f} connections failed"));
    }
    match field(v, path) {
        Some(x) => Cell::Num(x),
        None => Cell::Missing,
    }
}

fn fmt_num(x: f64) -> String {
    let a = x.abs();
    let s = if a >= 100.0 {
        format!("{:.0}", x)
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    };
    // Thousands separators on the integer part.
    let (int, frac) = match s.find('.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s.as_str(), ""),
    };
    let neg = int.starts_with('-');
    let digits = int.trim_start_matches('-');
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    format!("{}{out}{frac}", if neg { "-" } else { "" })
}

fn show(c: &Cell, scale: f64) -> String {
    match c {
        Cell::Num(x) => fmt_num(x * scale),
        Cell::Invalid(why) => format!("INVALID ({why})"),
        Cell::Missing => "-".into(),
    }
}

/// One comparison row: the field `path` of the run labelled `{ours}:{label}` against that of
/// `mosq:{label}`. `target` is a ratio bound on ours/mosquitto: `Some((bound, true))` means ratio >= bound,
/// `Some((bound, false))` means ratio <= bound.
struct Row<'a> {
    name: String,
    label: String,
    ours: &'static str,
    path: &'a str,
    scale: f64,
    target: Option<(f64, bool)>,
}

impl<'a> Row<'a> {
    /// Compares `ours:{label}` with `mosq:{label}`, unscaled and without a target.
    fn new(name: impl Into<String>, label: &str, path: &'a str) -> Self {
        Row {
            name: name.into(),
            label: label.to_string(),
            ours: "ours",
            path,
            scale: 1.0,
            target: None,
        }
    }

    /// Takes our side from the runs labelled `{prefix}:{label}` instead of `ours:{label}`.
    fn ours_from(mut self, prefix: &'static str) -> Self {
        self.ours = prefix;
        self
    }

    fn at_least(mut self, bound: f64) -> Self {
        self.target = Some((bound, true));
        self
    }

    fn at_most(mut self, bound: f64) -> Self {
        self.target = Some((bound, false));
        self
    }

    fn scaled(mut self, scale: f64) -> Self {
        self.scale = scale;
        self
    }
}

fn render(r: &Results, rows: &[Row]) -> String {
    let mut s =
        String::from("| metric | robustmq-edge | mosquitto | ours / mosquitto | target |\n");
    s.push_str("|---|---:|---:|---:|---|\n");
    for row in rows {
        let o = cell(r, &format!("{}:{}", row.ours, row.label), row.path);
        let m = cell(r, &format!("mosq:{}", row.label), row.path);
        let ratio = match (&o, &m) {
            (Cell::Num(a), Cell::Num(b)) if *b != 0.0 => Some(a / b),
            _ => None,
        };
        let ratio_s = ratio.map_or("-".into(), |x| format!("{x:.2}x"));
        let target_s = match (row.target, ratio) {
            (None, _) => String::new(),
            (Some((b, ge)), Some(x)) => {
                let ok = if ge { x >= b } else { x <= b };
                format!(
                    "{} {b}x: **{}**",
                    if ge { ">=" } else { "<=" },
                    if ok { "met" } else { "MISSED" }
                )
            }
            (Some((b, ge)), None) => {
                format!("{} {b}x: no valid number", if ge { ">=" } else { "<=" })
            }
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            row.name,
            show(&o, row.scale),
            show(&m, row.scale),
            ratio_s,
            target_s
        ));
    }
    s
}

fn shape_name(shape: &str) -> &'static str {
    match shape {
        "fanin" => "100 pubs -> 1 sub",
        "fanout" => "1 pub -> 100 subs",
        _ => "1 pub -> 1 sub",
    }
}

fn size_name(size: &str) -> &'static str {
    if size == "4096" {
        "4 KB"
    } else {
        "64 B"
    }
}

/// The three throughput shapes and two payload sizes of scripts/bench.sh, as label parts and names.
const SHAPES: [&str; 3] = ["1-1", "fanin", "fanout"];
const SIZES: [&str; 2] = ["64", "4096"];

pub fn tables(r: &Results) -> String {
    let mut out = String::new();
    let mut section = |title: &str, rows: Vec<Row>| {
        out.push_str(title);
        out.push_str(&render(r, &rows));
    };

    // Headline targets.
    let mut rows = vec![
        Row::new(
            "QoS 0 throughput, 1 -> 1, 64 B (msg/s)",
            "tp:1-1:q0:64",
            "delivered_per_s",
        )
        .at_least(2.0),
        Row::new(
            "QoS 1 throughput, durable, 1 -> 1, 64 B (msg/s)",
            "tp:1-1:q1:64",
            "delivered_per_s",
        )
        .at_least(1.5),
    ];
    for q in ["0", "1"] {
        let name = format!("latency p99, QoS {q}, 10k msg/s (us)");
        rows.push(Row::new(name, &format!("lat:q{q}"), "latency_us.p99").at_most(1.0));
    }
    rows.push(
        Row::new(
            "memory per idle connection (bytes)",
            "conns",
            "bytes_per_conn",
        )
        .at_most(2.0),
    );
    rows.push(
        Row::new(
            "memory per idle connection, keep alive 60 s (bytes)",
            "conns-ka",
            "bytes_per_conn",
        )
        .at_most(2.0),
    );
    rows.push(Row::new("idle RSS (kB)", "rss-idle", "rss_kb").at_most(1.0));
    section("### Targets\n\n", rows);

    // Throughput matrix.
    let mut rows = Vec::new();
    for shape in SHAPES {
        for size in SIZES {
            for q in ["0", "1", "2"] {
                let (shape_s, size_s) = (shape_name(shape), size_name(size));
                let name = format!("QoS {q}, {shape_s}, {size_s} (msg/s delivered)");
                let label = format!("tp:{shape}:q{q}:{size}");
                rows.push(Row::new(name, &label, "delivered_per_s"));
            }
        }
    }
    section(
        "\n### Throughput (messages/s counted at the subscribers)\n\n",
        rows,
    );

    // Durability cost.
    let mut rows = Vec::new();
    for (l, name) in [
        ("tp:1-1:q1:64", "QoS 1, 1 -> 1, 64 B (msg/s)"),
        ("tp:1-1:q1:4096", "QoS 1, 1 -> 1, 4 KB (msg/s)"),
        ("tp:fanin:q1:64", "QoS 1, 100 pubs -> 1 sub, 64 B (msg/s)"),
    ] {
        rows.push(Row::new(
            format!("{name}, ours durable"),
            l,
            "delivered_per_s",
        ));
        let none = format!("{name}, ours durability = \"none\"");
        rows.push(Row::new(none, l, "delivered_per_s").ours_from("ours-none"));
    }
    let lat = "latency p99, QoS 1, 10k msg/s";
    rows.push(Row::new(
        format!("{lat}, ours durable (us)"),
        "lat:q1",
        "latency_us.p99",
    ));
    rows.push(
        Row::new(
            format!("{lat}, ours durability = \"none\" (us)"),
            "lat:q1",
            "latency_us.p99",
        )
        .ours_from("ours-none"),
    );
    section(
        "\n### Durability cost (mosquitto acknowledges from memory, persistence off)\n\n",
        rows,
    );

    // Latency detail.
    let mut rows = Vec::new();
    for q in ["0", "1"] {
        for (path, n) in [
            ("latency_us.p50", "p50"),
            ("latency_us.p99", "p99"),
            ("latency_us.p999", "p99.9"),
            ("latency_us.max", "max"),
        ] {
            rows.push(Row::new(
                format!("QoS {q} {n} (us)"),
                &format!("lat:q{q}"),
                path,
            ));
        }
    }
    section(
        "\n### Latency, publish to delivery, 1 -> 1, 64 B, 10,000 msg/s (median of the rounds)\n\n",
        rows,
    );

    // Memory and start-up.
    let rows = [
        ("idle RSS after start (kB)", "rss-idle", "rss_kb"),
        ("RSS with idle connections (kB)", "conns", "rss_after_kb"),
        ("idle connections opened", "conns", "connected"),
        (
            "memory per idle connection (bytes)",
            "conns",
            "bytes_per_conn",
        ),
        (
            "memory per idle connection, keep alive 60 s (bytes)",
            "conns-ka",
            "bytes_per_conn",
        ),
        (
            "start-up, empty data dir (ms to first CONNACK)",
            "startup-empty",
            "ready_ms",
        ),
    ];
    let rows = rows.map(|(name, label, path)| Row::new(name, label, path));
    section("\n### Memory and start-up\n\n", rows.into());

    // Memory vs backlog. Targets (issue 9): fill and drain at 1.5x mosquitto's rate.
    let mut rows = Vec::new();
    for n in ["10000", "100000", "1000000"] {
        let what = [
            (
                "fill, QoS 1 64 B (msg/s)",
                "fill",
                "published_per_s",
                Some(1.5),
            ),
            ("RSS after fill (kB)", "fill", "rss_after_kb", None),
            (
                "start-up with it stored (ms to first CONNACK)",
                "startup",
                "ready_ms",
                None,
            ),
            ("RSS after restart (kB)", "rss-restart", "rss_kb", None),
            ("drain (msg/s)", "drain", "delivered_per_s", Some(1.5)),
            ("peak RSS while draining (kB)", "drain", "peak_rss_kb", None),
            (
                "fill, 256 in flight (msg/s)",
                "fill-w256",
                "published_per_s",
                None,
            ),
        ];
        for (name, step, path, at_least) in what {
            let row = Row::new(
                format!("{n} queued: {name}"),
                &format!("bk{n}:{step}"),
                path,
            );
            rows.push(match at_least {
                Some(bound) => row.at_least(bound),
                None => row,
            });
        }
    }
    section(
        "\n### Memory vs backlog (one offline persistent session, durable)\n\n",
        rows,
    );

    // Peak RSS under load.
    let mut rows = Vec::new();
    for shape in SHAPES {
        for size in SIZES {
            for q in ["0", "1", "2"] {
                let name = format!("QoS {q}, {}, {}", shape_name(shape), size_name(size));
                let label = format!("tp:{shape}:q{q}:{size}");
                rows.push(Row::new(name, &label, "peak_rss_kb").scaled(1.0 / 1024.0));
            }
        }
    }
    section(
        "\n### Peak broker RSS during each throughput run (MB)\n\n",
        rows,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The row of the report tables made from `results` (JSON lines) that starts with `start`.
    fn table_row(results: &[&str], start: &str) -> String {
        let t = tables(&load(&results.join("\n")));
        t.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no row `{start}` in\n{t}"))
            .to_string()
    }

    #[test]
    fn invalid_runs_never_show_a_number() {
        let line = table_row(
            &[
                r#"{"label":"ours:tp:1-1:q0:64","test":"throughput","valid":true,"delivered_per_s":300000.0}"#,
                r#"{"label":"mosq:tp:1-1:q0:64","test":"throughput","valid":false,"missing":12,"duplicates":0,"delivered_per_s":null}"#,
            ],
            "| QoS 0 throughput, 1 -> 1, 64 B",
        );
        assert!(line.contains("300,000"), "{line}");
        assert!(line.contains("INVALID (missing 12, dup 0)"), "{line}");
        assert!(line.contains("no valid number"), "{line}");
    }

    #[test]
    fn rounds_give_the_median() {
        let r = load(concat!(
            r#"{"label":"ours:lat:q1:r1","valid":true,"latency_us":{"p99":300}}"#,
            "\n",
            r#"{"label":"ours:lat:q1:r2","valid":true,"latency_us":{"p99":900}}"#,
            "\n",
            r#"{"label":"ours:lat:q1:r3","valid":true,"latency_us":{"p99":500}}"#,
            "\n",
            r#"{"label":"mosq:lat:q1:r1","valid":false,"missing":3,"duplicates":0}"#,
            "\n",
        ));
        let c = cell(&r, "ours:lat:q1", "latency_us.p99");
        assert!(matches!(c, Cell::Num(x) if x == 500.0), "{}", show(&c, 1.0));
        assert!(matches!(
            cell(&r, "mosq:lat:q1", "latency_us.p99"),
            Cell::Invalid(_)
        ));
    }

    #[test]
    fn ratio_and_target_status() {
        let line = table_row(
            &[
                r#"{"label":"ours:rss-idle","test":"mem","rss_kb":3000}"#,
                r#"{"label":"mosq:rss-idle","test":"mem","rss_kb":6000}"#,
            ],
            "| idle RSS (kB)",
        );
        assert!(line.contains("0.50x") && line.contains("**met**"), "{line}");
        assert_eq!(fmt_num(1234567.0), "1,234,567");
        assert_eq!(fmt_num(12.345), "12.3");
    }
}
