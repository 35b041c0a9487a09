//! The markdown report of a `bench/run.sh` run.
//!
//! Input: a results file with one measurement per line,
//! `key<TAB>target<TAB>round<TAB>value` (targets `direct`, `haproxy`,
//! `sqlease`), a `key=value` machine description and the proxy's
//! `/metrics` text after the rotation rounds. Output: one table of medians
//! and ratios, the targets of issue 6 with PASS/FAIL, the raw rounds.
//!
//! Ratios are the median of the per-round ratios: each round measures the
//! three targets back to back, so a ratio compares numbers taken under the
//! same load of this shared machine.
//!
//! Everything after the line `<!-- bench:notes -->` in an existing output
//! file is kept (hand-written analysis survives a re-run).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};

const NOTES_MARKER: &str = "<!-- bench:notes -->";
const TARGETS: [&str; 3] = ["direct", "haproxy", "sqlease"];

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// Raw results (key, target, round, value; tab-separated).
    #[arg(long)]
    results: PathBuf,
    /// Machine description (key=value lines).
    #[arg(long)]
    machine: PathBuf,
    /// sqlease /metrics text taken after the rotation rounds.
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// Markdown file to write (notes after the marker are kept).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Raw values: key -> target -> values in round order.
type Raw = BTreeMap<String, BTreeMap<String, Vec<(u32, f64)>>>;

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

struct Data {
    raw: Raw,
}

impl Data {
    fn values(&self, key: &str, target: &str) -> Vec<f64> {
        self.raw
            .get(key)
            .and_then(|t| t.get(target))
            .map(|v| v.iter().map(|(_, x)| *x).collect())
            .unwrap_or_default()
    }

    fn median(&self, key: &str, target: &str) -> Option<f64> {
        median(&self.values(key, target))
    }

    /// Median over rounds of `num_key/num_target ÷ den_key/den_target`.
    fn ratio(&self, num: (&str, &str), den: (&str, &str)) -> Option<f64> {
        let a = self.raw.get(num.0).and_then(|t| t.get(num.1))?;
        let b = self.raw.get(den.0).and_then(|t| t.get(den.1))?;
        let per_round: Vec<f64> = a
            .iter()
            .filter_map(|(r, x)| {
                b.iter()
                    .find(|(rb, _)| rb == r)
                    .and_then(|(_, y)| (*y != 0.0).then_some(x / y))
            })
            .collect();
        median(&per_round)
    }
}

fn fmt_num(v: Option<f64>, unit: &str) -> String {
    match v {
        None => "–".into(),
        Some(x) if unit == "ms" => format!("{x:.2}"),
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.1}"),
    }
}

fn fmt_ratio(v: Option<f64>) -> String {
    v.map_or("–".into(), |x| format!("{x:.3}"))
}

/// Swap pause histogram from the Prometheus text: (upper bound in µs,
/// cumulative count) per bucket, and the total count.
fn swap_histogram(metrics: &str) -> (Vec<(f64, f64)>, f64) {
    let mut buckets = Vec::new();
    let mut count = 0.0;
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("sqlease_swap_pause_seconds_bucket{le=\"") {
            let Some((le, val)) = rest.split_once("\"}") else {
                continue;
            };
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse::<f64>().unwrap_or(f64::INFINITY) * 1e6
            };
            if let Ok(v) = val.trim().parse::<f64>() {
                buckets.push((le, v));
            }
        } else if let Some(rest) = line.strip_prefix("sqlease_swap_pause_seconds_count ") {
            count = rest.trim().parse().unwrap_or(0.0);
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    (buckets, count)
}

/// Upper bound (µs) of the bucket holding quantile `q`.
fn bucket_quantile(buckets: &[(f64, f64)], count: f64, q: f64) -> Option<f64> {
    if count <= 0.0 {
        return None;
    }
    let want = (q * count).ceil().max(1.0);
    buckets.iter().find(|(_, c)| *c >= want).map(|(le, _)| *le)
}

fn metric_value(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|r| r.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

fn fmt_us(v: Option<f64>) -> String {
    match v {
        None => "no swap recorded".into(),
        Some(x) if x.is_infinite() => "> 1 s".into(),
        Some(x) if x >= 1000.0 => format!("≤ {} ms", x / 1000.0),
        Some(x) => format!("≤ {x:.0} µs"),
    }
}

struct Check {
    what: String,
    measured: String,
    pass: Option<bool>,
}

fn verdict(p: Option<bool>) -> &'static str {
    match p {
        Some(true) => "**PASS**",
        Some(false) => "**FAIL**",
        None => "n/a",
    }
}

pub fn run(args: &ReportArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.results)
        .with_context(|| format!("reading {}", args.results.display()))?;
    let mut raw: Raw = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 4 {
            continue;
        }
        let (Ok(round), Ok(value)) = (f[2].parse::<u32>(), f[3].parse::<f64>()) else {
            continue;
        };
        raw.entry(f[0].to_string())
            .or_default()
            .entry(f[1].to_string())
            .or_default()
            .push((round, value));
    }
    let d = Data { raw };
    let machine = std::fs::read_to_string(&args.machine)
        .with_context(|| format!("reading {}", args.machine.display()))?;
    let machine: Vec<(String, String)> = machine
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let m = |k: &str| {
        machine
            .iter()
            .find(|(mk, _)| mk == k)
            .map_or("?", |(_, v)| v.as_str())
    };
    let metrics = match &args.metrics {
        Some(p) => std::fs::read_to_string(p).unwrap_or_default(),
        None => String::new(),
    };

    // ---- the table ----
    let mut t = String::new();
    t.push_str(
        "| workload | metric | direct | haproxy | sqlease | sqlease/direct | sqlease/haproxy |\n",
    );
    t.push_str("|---|---|---:|---:|---:|---:|---:|\n");
    let mut row = |label: &str, metric: &str, key: &str, unit: &str| {
        let cells: Vec<String> = TARGETS
            .iter()
            .map(|tg| fmt_num(d.median(key, tg), unit))
            .collect();
        let _ = writeln!(
            t,
            "| {label} | {metric} | {} | {} | {} | {} | {} |",
            cells[0],
            cells[1],
            cells[2],
            fmt_ratio(d.ratio((key, "sqlease"), (key, "direct"))),
            fmt_ratio(d.ratio((key, "sqlease"), (key, "haproxy"))),
        );
    };
    for (test, short) in [("oltp_point_select", "ps"), ("oltp_read_write", "rw")] {
        for th in [1, 8, 64] {
            let label = format!("{test}, {th} thr");
            row(&label, "QPS", &format!("{short}{th}.qps"), "");
            row(&label, "p99 ms", &format!("{short}{th}.p99"), "ms");
        }
    }
    row("connection churn, 8 thr", "connections/s", "churn.cps", "");
    row(
        "idle connections held",
        "RSS KiB per connection",
        "idle.kib",
        "",
    );
    // Rotation rows: sqlease only, the ratio column compares with the
    // rounds without rotation.
    let rot_ratio = d.ratio(("rot.p99", "sqlease"), ("rot.base_p99", "sqlease"));
    let _ = writeln!(
        t,
        "| point_select 8 thr, no rotation | p99 ms (errors; max ms) | – | – | {} ({}; {}) | – | – |",
        fmt_num(d.median("rot.base_p99", "sqlease"), "ms"),
        d.values("rot.base_errors", "sqlease").iter().sum::<f64>(),
        fmt_num(d.median("rot.base_max", "sqlease"), "ms"),
    );
    let _ = writeln!(
        t,
        "| point_select 8 thr, rotating | p99 ms (errors; max ms) | – | – | {} ({}; {}) | rotating/not: {} | – |",
        fmt_num(d.median("rot.p99", "sqlease"), "ms"),
        d.values("rot.errors", "sqlease").iter().sum::<f64>(),
        fmt_num(d.median("rot.max", "sqlease"), "ms"),
        fmt_ratio(rot_ratio)
    );
    let (buckets, count) = swap_histogram(&metrics);
    let p50 = bucket_quantile(&buckets, count, 0.5);
    let p99 = bucket_quantile(&buckets, count, 0.99);
    let _ = writeln!(
        t,
        "| swap pause (proxy histogram, {count} swaps) | p50 / p99 | – | – | {} / {} | – | – |",
        fmt_us(p50),
        fmt_us(p99)
    );

    // ---- targets ----
    let mut checks = Vec::new();
    for th in [8, 64] {
        let k = format!("ps{th}.qps");
        let r = d.ratio((&k, "sqlease"), (&k, "haproxy"));
        checks.push(Check {
            what: format!("point_select {th} thr: QPS ≥ 0.95 × haproxy"),
            measured: fmt_ratio(r),
            pass: r.map(|x| x >= 0.95),
        });
        let k = format!("ps{th}.p99");
        let r = d.ratio((&k, "sqlease"), (&k, "haproxy"));
        checks.push(Check {
            what: format!("point_select {th} thr: p99 ≤ 1.1 × haproxy"),
            measured: fmt_ratio(r),
            pass: r.map(|x| x <= 1.1),
        });
    }
    for th in [1, 8, 64] {
        let k = format!("rw{th}.qps");
        let r = d.ratio((&k, "sqlease"), (&k, "haproxy"));
        checks.push(Check {
            what: format!("read_write {th} thr: QPS ≥ 0.97 × haproxy"),
            measured: fmt_ratio(r),
            pass: r.map(|x| x >= 0.97),
        });
    }
    let r = d.ratio(("churn.cps", "sqlease"), ("churn.cps", "direct"));
    checks.push(Check {
        what: "connection churn: ≥ 1.2 × direct".into(),
        measured: fmt_ratio(r),
        pass: r.map(|x| x >= 1.2),
    });
    let kib = d.median("idle.kib", "sqlease");
    checks.push(Check {
        what: format!(
            "idle: ≤ 32 KiB sqlease RSS per connection ({} held)",
            m("idle_count")
        ),
        measured: kib.map_or("–".into(), |x| format!("{x:.1} KiB")),
        pass: kib.map(|x| x <= 32.0),
    });
    let errors: f64 = d.values("rot.errors", "sqlease").iter().sum();
    checks.push(Check {
        what: "rotation: p99 ≤ 2 × p99 without rotation".into(),
        measured: fmt_ratio(rot_ratio),
        pass: rot_ratio.map(|x| x <= 2.0),
    });
    let rot_rounds = d.values("rot.errors", "sqlease").len();
    checks.push(Check {
        what: "rotation: zero errors".into(),
        measured: format!("{errors}"),
        pass: (rot_rounds > 0).then_some(errors == 0.0),
    });
    checks.push(Check {
        what: "swap pause p99 ≤ 1 ms (proxy histogram)".into(),
        measured: fmt_us(p99),
        pass: p99.map(|x| x <= 1000.0),
    });

    let mut targets = String::from("| target (issue 6) | measured | result |\n|---|---:|---|\n");
    for c in &checks {
        let _ = writeln!(
            targets,
            "| {} | {} | {} |",
            c.what,
            c.measured,
            verdict(c.pass)
        );
    }

    // ---- raw rounds ----
    let mut rawmd =
        String::from("| key | target | rounds | spread (max−min)/median |\n|---|---|---|---:|\n");
    for (key, per_target) in &d.raw {
        for (tg, vals) in per_target {
            let v: Vec<f64> = vals.iter().map(|(_, x)| *x).collect();
            let med = median(&v).unwrap_or(0.0);
            let spread = if med != 0.0 {
                let max = v.iter().cloned().fold(f64::MIN, f64::max);
                let min = v.iter().cloned().fold(f64::MAX, f64::min);
                format!("{:.0} %", (max - min) / med * 100.0)
            } else {
                "–".into()
            };
            let list: Vec<String> = vals.iter().map(|(_, x)| format!("{x:.2}")).collect();
            let _ = writeln!(rawmd, "| {key} | {tg} | {} | {spread} |", list.join(", "));
        }
    }

    let swaps = metric_value(&metrics, "sqlease_swaps_total");
    let swaps_failed = metric_value(&metrics, "sqlease_swaps_failed_total");

    println!("{t}");
    println!("{targets}");

    let Some(out) = &args.out else {
        return Ok(());
    };
    let notes = std::fs::read_to_string(out)
        .ok()
        .and_then(|old| old.find(NOTES_MARKER).map(|i| old[i..].to_string()))
        .unwrap_or_else(|| format!("{NOTES_MARKER}\n"));
    let mut doc = String::new();
    let _ = writeln!(doc, "# Benchmarks\n");
    let _ = writeln!(
        doc,
        "Produced by `bench/run.sh{}` ({} rounds; generated from the run's raw \
         results by `sqlease-bench report`). Issue 6 describes the workloads and \
         the targets. Re-run it on your machine: absolute numbers depend on it, \
         the ratios are what the targets are about.\n",
        if m("mode") == "quick" { " --quick" } else { "" },
        m("rounds")
    );
    let _ = writeln!(doc, "## Machine\n");
    for (k, label) in [
        ("date", "date"),
        ("cpu", "CPU"),
        ("cores", "cores"),
        ("kernel", "kernel"),
        ("mariadb", "MariaDB"),
        ("haproxy", "haproxy"),
        ("sysbench", "sysbench"),
        ("commit", "sqlease commit"),
        ("load_before", "load average before the run"),
        ("load_after", "load average after the run"),
    ] {
        let _ = writeln!(doc, "- {label}: {}", m(k));
    }
    let _ = writeln!(doc, "\nSettings: {}.\n", m("settings").replace("; ", ", "));
    let _ = writeln!(doc, "## Results (medians)\n");
    doc.push_str(&t);
    let _ = writeln!(
        doc,
        "\nRatios are medians of the per-round ratios (each round runs the \
         three targets back to back, in an order that changes every round). \
         For QPS and connections/s higher is better; for p99 and RSS lower is better.\n"
    );
    let _ = writeln!(
        doc,
        "Rotation: {} swaps completed during the run, {} failed (sqlease counters).\n",
        swaps.map_or("?".into(), |x| x.to_string()),
        swaps_failed.map_or("?".into(), |x| x.to_string())
    );
    let _ = writeln!(doc, "## Targets\n");
    doc.push_str(&targets);
    let _ = writeln!(doc, "\n## Method\n");
    doc.push_str(METHOD);
    let _ = writeln!(
        doc,
        "\n## Raw rounds\n\nEvery measurement of the run, in round order, \
         to judge the noise of this shared machine.\n"
    );
    doc.push_str(&rawmd);
    doc.push('\n');
    doc.push_str(&notes);
    std::fs::write(out, doc).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

const METHOD: &str = "\
- One private MariaDB (its own data directory, `--max-connections=6000`), \
  haproxy 2.x in `mode tcp` with one backend server, and the release build \
  of sqlease with a Vault source (the test kit's Vault stand-in, configured \
  by `config/vault-init.sh`, TTL 1 h so that no rotation happens unless the \
  benchmark asks for one) and the admin listener. Client, proxies and \
  server share the machine's cores, as a sidecar does.
- sysbench `oltp_point_select` and `oltp_read_write`, `--db-ps-mode=auto` \
  (server-side prepared statements), `--percentile=99`; QPS is sysbench's \
  `queries … per sec.`; p99 is its 99th percentile of event latency \
  (one event is one query for point_select, one transaction of 18 \
  statements for read_write).
- Connection churn: `sqlease-bench churn`, 8 tasks in one process \
  (mysql_async), each looping connect + authenticate + `SELECT 1` + \
  COM_QUIT; the driver's own post-connect queries are turned off.
- Idle: `sqlease-bench idle` opens the connections (each does one \
  COM_PING) and holds them; sqlease's VmRSS (from `/proc/<pid>/status`) \
  before and after, divided by the count. The same for haproxy for \
  comparison (direct has no proxy process).
- Rotation: sysbench `oltp_point_select` at 8 threads through sqlease, \
  once without rotation and once while `POST /v1/rotate` asks for a new \
  generation (a new MySQL user from the Vault stand-in) every second, so \
  that every session swaps several times inside the window; errors are \
  sysbench's ignored errors (`--mysql-ignore-errors=all`). The swap pause \
  quantiles are the upper bounds of the proxy's own histogram buckets \
  (`sqlease_swap_pause_seconds` on `/metrics`).
";
