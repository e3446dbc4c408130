//! Results: metrics in `run_result.json`, `summary.csv` / `summary.json`,
//! and `flow analyze` on the stored artifact.

use std::collections::BTreeMap;
use std::path::Path;

use super::Flow;
use super::run::Project;

mod scrape;

/// Every result file of an artifact, by relative path.
fn result_files(artifact: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for name in ["summary.csv", "summary.json", "report.html"] {
        out.insert(
            name.to_string(),
            std::fs::read(artifact.join(name)).expect(name),
        );
    }
    for e in std::fs::read_dir(artifact.join("runs"))
        .expect("runs")
        .flatten()
    {
        let p = e.path().join("run_result.json");
        let rel = p
            .strip_prefix(artifact)
            .expect("inside")
            .display()
            .to_string();
        out.insert(rel, std::fs::read(&p).expect("run_result.json"));
    }
    out
}

fn project() -> Project {
    Project::new()
        .file(
            "suite.yaml",
            "suite: t\nworkloads:\n  - { workload: workload.yaml, modes: [baseline, slow], repetitions: 3 }\n",
        )
        .file(
            "workload.yaml",
            r#"workload: m
params: { base: 10 }
steps:
  emit: { run: "echo value: $(( {{ params.base }} + {{ run.repetition }} ))" }
metrics:
  v:
    from: "logs/emit@local.out"
    regex: "value: (?P<value>[0-9]+)"
    unit: ms
    better: lower
  broken: { from: "nothing/*.json", json: /x }
modes:
  slow:
    params: { base: 20 }
"#,
        )
}

#[test]
fn runs_get_metrics_and_the_artifact_a_summary_against_baseline() {
    let p = project();
    let (stdout, _) = p.run(&[], 0);
    assert!(stdout.contains("6 runs: 6 passed"), "{stdout}");
    assert!(stdout.contains("summary: artifacts/"), "{stdout}");
    let art = p.artifact();
    let csv = std::fs::read_to_string(art.join("summary.csv")).expect("summary.csv");
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(
        rows[0],
        "workload,mode,variant,metric,unit,better,n,n_ok,mean,median,std,min,max,ci95_low,ci95_high,\
         baseline_mean,ratio,ratio_ci95_low,ratio_ci95_high,overhead_pct,p_value,significant,none_mean,\
         none_ratio,none_p_value,none_significant"
    );
    // baseline: 11, 12, 13; slow: 21, 22, 23. std 1, t(0.975, 2) = 4.302653,
    // half width 4.302653 / √3 = 2.484138.
    assert_eq!(rows[1], "m,baseline,default,broken,,,3,0,,,,,,,,,,,,,,,,,,");
    assert!(
        rows[2].starts_with("m,baseline,default,v,ms,lower,3,3,12,12,1,11,13,9.51586"),
        "{csv}"
    );
    assert_eq!(rows[3], "m,slow,default,broken,,,3,0,,,,,,,,,,,,,,,,,,");
    let slow: Vec<&str> = rows[4].split(',').collect();
    assert_eq!(
        &slow[..13],
        &[
            "m", "slow", "default", "v", "ms", "lower", "3", "3", "22", "22", "1", "21", "23"
        ]
    );
    assert_eq!(slow[15], "12", "baseline mean: {csv}");
    assert!(slow[16].starts_with("1.8333"), "ratio: {csv}");
    // The ratio's 95% CI holds it.
    let (lo, hi): (f64, f64) = (
        slow[17].parse().expect("ratio_ci95_low"),
        slow[18].parse().expect("ratio_ci95_high"),
    );
    assert!(lo < 1.8333 && 1.8334 < hi && lo > 1.4 && hi < 2.3, "{csv}");
    assert!(slow[19].starts_with("83.333"), "overhead: {csv}");
    assert_eq!(slow[21], "true", "{csv}");
    // Each run says why `broken` has no value.
    for e in std::fs::read_dir(art.join("runs")).expect("runs").flatten() {
        let r: serde_json::Value = serde_json::from_slice(
            &std::fs::read(e.path().join("run_result.json")).expect("result"),
        )
        .expect("json");
        assert_eq!(
            r["metrics"]["broken"]["error"],
            "no file matches `nothing/*.json`"
        );
        assert!(r["metrics"]["broken"].get("value").is_none());
        assert_eq!(r["metrics"]["v"]["unit"], "ms");
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(art.join("summary.json")).expect("json"))
            .expect("json");
    assert_eq!(summary["rows"][3]["significant"], true);
}

#[test]
fn analyze_gives_the_same_bytes_and_follows_changed_data() {
    let p = project();
    p.run(&[], 0);
    let art = p.artifact();
    let before = result_files(&art);
    let (stdout, _) = Flow::new()
        .args(["analyze", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(0);
    assert_eq!(
        stdout,
        format!(
            "6 runs: 6 metric values extracted, 6 without a value\nsummary: artifacts/{id}/summary.csv\n\
             report: artifacts/{id}/report.html\n",
            id = art.file_name().expect("id").to_string_lossy()
        )
    );
    assert_eq!(
        result_files(&art),
        before,
        "analyze changed nothing, byte for byte"
    );
    // A log changed by hand: only the runs picked by --only are extracted
    // again, and the summary follows.
    let run = std::fs::read_dir(art.join("runs"))
        .expect("runs")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("m.slow.r1-"))
        })
        .expect("m.slow.r1");
    std::fs::write(run.join("logs/emit@local.out"), "value: 121\n").expect("edit");
    Flow::new()
        .args([
            "analyze",
            "--only",
            "m.baseline.*",
            "--artifacts",
            "artifacts",
        ])
        .cwd(p.path())
        .expect(0);
    assert_eq!(
        result_files(&art),
        before,
        "--only kept the slow runs as they were"
    );
    Flow::new()
        .args([
            "analyze",
            "--only",
            "m.slow.r1-*",
            "--artifacts",
            "artifacts",
        ])
        .cwd(p.path())
        .expect(0);
    let csv = std::fs::read_to_string(art.join("summary.csv")).expect("summary.csv");
    assert!(
        csv.contains("m,slow,default,v,ms,lower,3,3,55.333333333333336,23,"),
        "{csv}"
    );
    let (_, stderr) = Flow::new()
        .args(["analyze", "--only", "nope*", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(2);
    assert!(stderr.contains("matches `--only nope*`"), "{stderr}");
}

#[test]
fn compare_shows_both_means_the_delta_and_its_significance() {
    let p = project();
    p.run(&[], 0);
    let a = p.artifact();
    // Artifact ids have a one-second resolution.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    p.run(&["--set", "base=15"], 0);
    let b = p.artifact();
    assert_ne!(a, b);
    let name = |d: &Path| d.file_name().expect("id").to_string_lossy().into_owned();
    let (json, _) = Flow::new()
        .args([
            "compare",
            "--json",
            "--artifacts",
            "artifacts",
            &name(&a),
            &name(&b),
        ])
        .cwd(p.path())
        .expect(0);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    let row = v["rows"]
        .as_array()
        .and_then(|r| {
            r.iter()
                .find(|r| r["mode"] == "baseline" && r["metric"] == "v")
        })
        .expect("baseline v");
    // 11, 12, 13 against 16, 17, 18.
    assert_eq!(row["a_mean"], 12.0);
    assert_eq!(row["b_mean"], 17.0);
    assert_eq!(row["delta"], 5.0);
    assert_eq!(row["significant"], true);
    let (table, _) = Flow::new()
        .args(["compare", "--artifacts", "artifacts", &name(&a), &name(&b)])
        .cwd(p.path())
        .expect(0);
    let line = table
        .lines()
        .find(|l| l.starts_with("m ") && l.contains(" baseline ") && l.contains(" v "))
        .expect("a row");
    assert!(
        line.contains("12 ms (n=3)") && line.contains("17 ms (n=3)"),
        "{table}"
    );
    assert!(
        line.contains("+5 ") && line.contains("+41.7%") && line.ends_with("significant"),
        "{table}"
    );
}

/// Debian's Chromium, which `scripts/test.sh` installs.
const CHROMIUM: &str = "/usr/bin/chromium";

#[test]
fn the_report_renders_in_a_real_browser_without_console_errors() {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install chromium (`scripts/test.sh` does as root)"
    );
    let p = project();
    let (stdout, _) = p.run(&[], 0);
    assert!(stdout.contains("report: artifacts/"), "{stdout}");
    let art = p.artifact();
    let html = std::fs::read_to_string(art.join("report.html")).expect("report.html");
    // Self-contained: nothing to fetch, no script.
    for banned in ["<script", "href=\"http", "src=", "<link", "<img", "url("] {
        assert!(!html.contains(banned), "report.html contains {banned}");
    }
    // One plot per metric with a value, one timeline per run.
    assert_eq!(html.matches("<h3>m · v</h3>").count(), 1);
    assert_eq!(html.matches("seconds from the run").count(), 6);
    // The page as the browser built it, without console errors.
    let (_, dom) = browse(p.path(), &art.join("report.html"), 2000);
    assert!(
        dom.contains("<h2>Summary</h2>") && dom.matches("<svg").count() >= 7,
        "{dom}"
    );
}

/// Chromium's screenshot of `page` and the DOM it built, with its log;
/// fails on any console message or resource that did not load.
fn browse(dir: &Path, page: &Path, height: u32) -> (Vec<u8>, String) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install chromium (`scripts/test.sh` does as root)"
    );
    let profile = dir.join("chromium-profile");
    let shot = dir.join("report.png");
    let url = format!("file://{}", page.display());
    let base = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--enable-logging=stderr",
        "--log-level=0",
    ];
    let out = std::process::Command::new(CHROMIUM)
        .args(base)
        .arg(format!("--window-size=1280,{height}"))
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("chromium runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let console: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("CONSOLE") || l.contains("Failed to load resource") || l.contains("Uncaught")
        })
        .collect();
    assert!(console.is_empty(), "console: {console:#?}");
    let png = std::fs::read(&shot).expect("a screenshot");
    // For a person to look at: `FLOW_TEST_SCREENSHOTS=DIR` keeps a copy.
    if let Some(keep) = std::env::var_os("FLOW_TEST_SCREENSHOTS") {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let to = Path::new(&keep).join(format!("report-{name}.png"));
        std::fs::create_dir_all(&keep)
            .and_then(|()| std::fs::write(&to, &png))
            .expect("keep the screenshot");
    }
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    let dom = std::process::Command::new(CHROMIUM)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(&url)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("chromium runs");
    (png, String::from_utf8_lossy(&dom.stdout).into_owned())
}

/// A 2×2 matrix (two numeric keys, given out of order) with two modes:
/// the figure puts one key on a numeric (log) axis, draws a line per mode
/// and value of the other, titles both axes with the unit, keeps the
/// legend out of the plot, and adds the ratio to baseline; runs and rows
/// come in numeric order. `FLOW_TEST_SCREENSHOTS=DIR` keeps the
/// screenshot for a person to look at.
#[test]
fn a_two_by_two_matrix_with_two_modes_gets_numeric_axes_and_a_legend_outside_the_data() {
    let p = Project::new()
        .file(
            "suite.yaml",
            "suite: t\nworkloads:\n  - workload: workload.yaml\n    modes: [baseline, observed]\n    repetitions: 3\n    matrix:\n      size: [4096, 64]\n      count: [1000, 10]\n",
        )
        .file(
            "workload.yaml",
            r#"workload: m
params: { size: 64, count: 10, extra: 0 }
steps:
  emit: { run: "echo value: $(( {{ params.size }} / 8 + {{ params.count }} + {{ params.extra }} + {{ run.repetition }} ))" }
metrics:
  latency: { from: "logs/emit@local.out", regex: "value: (?P<value>[0-9]+)", unit: ms, better: lower }
modes:
  observed: { params: { extra: 50 } }
"#,
        );
    let (stdout, _) = p.run(&[], 0);
    assert!(stdout.contains("24 runs: 24 passed"), "{stdout}");
    let art = p.artifact();
    // Rows in numeric order: 64 before 4096, 10 before 1000.
    let csv = std::fs::read_to_string(art.join("summary.csv")).expect("summary.csv");
    let variants: Vec<&str> = csv
        .lines()
        .skip(1)
        .filter(|l| l.contains(",baseline,"))
        .map(|l| l.split(',').nth(2).expect("variant"))
        .collect();
    assert_eq!(variants.len(), 4, "{csv}");
    let html = std::fs::read_to_string(art.join("report.html")).expect("report.html");
    for banned in ["<script", "href=\"http", "src=\"http", "<link", "url("] {
        assert!(!html.contains(banned), "report.html contains {banned}");
    }
    let (_png, dom) = browse(p.path(), &art.join("report.html"), 2400);
    // One figure, its legend a list outside the plot, before the panels.
    let fig = dom
        .split("<figure id=\"metric-m-latency\">")
        .nth(1)
        .and_then(|f| f.split("</figure>").next())
        .expect("the metric's figure");
    let legend = fig
        .split("<ul class=\"legend\">")
        .nth(1)
        .and_then(|l| l.split("</ul>").next())
        .expect("a legend");
    let labels: Vec<String> = legend
        .split("</span>")
        .skip(1)
        .map(|x| x.split('<').next().unwrap_or("").trim().to_string())
        .collect();
    let sizes_first = labels
        == [
            "baseline · count=10",
            "baseline · count=1000",
            "observed · count=10",
            "observed · count=1000",
        ];
    let counts_first = labels
        == [
            "baseline · size=64",
            "baseline · size=4096",
            "observed · size=64",
            "observed · size=4096",
        ];
    assert!(sizes_first || counts_first, "{labels:?}");
    let (x_key, ticks) = if sizes_first {
        ("size", ["64", "4096"])
    } else {
        ("count", ["10", "1000"])
    };
    assert!(fig.find("class=\"legend\"") < fig.find("<svg"), "{fig}");
    let svgs: Vec<&str> = fig.split("<svg").skip(1).collect();
    assert_eq!(svgs.len(), 2, "the metric and its ratio to baseline");
    // Axis titles with the unit, a log axis with the matrix's own ticks.
    let text = |svg: &str| -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                t.split_once('>')
                    .map(|(_, r)| r.split("</text>").next().unwrap_or("").trim().to_string())
            })
            .collect()
    };
    let metric = text(svgs[0]);
    assert!(
        metric.contains(&format!("{x_key} (log scale)")),
        "{metric:?}"
    );
    assert!(metric.contains(&"latency (ms)".to_string()), "{metric:?}");
    for t in ticks {
        assert!(metric.contains(&t.to_string()), "tick {t}: {metric:?}");
    }
    assert!(
        !svgs[0].contains("stroke-dasharray"),
        "no legend box or dashes over the data"
    );
    let ratio = text(svgs[1]);
    assert!(
        ratio.contains(&"latency ÷ baseline".to_string()),
        "{ratio:?}"
    );
    // Runs in reading order: the first is the smallest variant's first
    // repetition, baseline first.
    let first_run = dom
        .split("<section class=\"run\" id=\"")
        .nth(1)
        .expect("a run");
    assert!(first_run.contains("repetition 1"), "{first_run}");
    assert!(first_run.contains("mode baseline"), "{first_run}");
    assert!(
        first_run.contains("size=64") && first_run.contains("count=10"),
        "{first_run}"
    );
    // Each run shows its metric value.
    assert!(first_run.contains("<th>latency</th>"), "{first_run}");
}

/// More than 100 runs: one filterable table, no timelines; the filter
/// is inline script, nothing fetched.
#[test]
fn past_a_hundred_runs_the_report_is_a_filterable_table() {
    let p = Project::new()
        .file(
            "suite.yaml",
            "suite: t\nworkloads:\n  - { workload: workload.yaml, repetitions: 101 }\n",
        )
        .file(
            "workload.yaml",
            "workload: m\nsteps:\n  emit: { run: \"echo value: 1\" }\nmetrics:\n  v: { from: \"logs/emit@local.out\", regex: \"value: (?P<value>[0-9]+)\" }\n",
        );
    p.run(&["--jobs", "4"], 0);
    let art = p.artifact();
    let html = std::fs::read_to_string(art.join("report.html")).expect("report.html");
    assert_eq!(
        html.matches("seconds from the run").count(),
        0,
        "no timelines"
    );
    assert!(html.contains("<table id=\"runs\">"));
    assert!(!html.contains("<script src"), "inline only");
    let (_png, dom) = browse(p.path(), &art.join("report.html"), 1200);
    let rows = dom
        .split("<table id=\"runs\">")
        .nth(1)
        .expect("the table")
        .matches("<tr>")
        .count();
    assert_eq!(rows, 102, "a header and 101 runs");
}

/// An artifact moved after it was made: `flow analyze` runs its run- and
/// suite-level analyze steps against the new place, never the old one.
#[test]
fn analyze_steps_follow_a_moved_artifact() {
    let p = Project::new()
        .file(
            "suite.yaml",
            "suite: t\nworkloads:\n  - { workload: workload.yaml }\n\
             analyze:\n  list:\n    run: \"ls {{ artifact.dir }}/runs > {{ artifact.dir }}/list.txt\"\n",
        )
        .file(
            "workload.yaml",
            "workload: m\nsteps:\n  emit: { run: \"echo hi > out.txt\" }\n  get: { kind: fetch, paths: [out.txt] }\n  \
             mark:\n    kind: analyze\n    needs: [get]\n    run: \"mkdir -p {{ run.dir }}/analysis && cat {{ run.dir }}/hosts/local/out.txt > {{ run.dir }}/analysis/mark.txt\"\n",
        );
    p.run(&[], 0);
    let old = p.artifact();
    let id = old
        .file_name()
        .expect("a name")
        .to_string_lossy()
        .into_owned();
    let elsewhere = p.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).expect("mkdir");
    std::fs::rename(&old, elsewhere.join(&id)).expect("move the artifact");
    let (stdout, stderr) = Flow::new()
        .args(["analyze", &id, "--artifacts", "elsewhere"])
        .cwd(p.path())
        .expect(0);
    assert!(stdout.contains("1 run"), "{stdout}{stderr}");
    let moved = elsewhere.join(&id);
    assert!(!old.exists(), "nothing written where the artifact was");
    assert!(
        std::fs::read_to_string(moved.join("list.txt"))
            .expect("list")
            .contains("m.baseline")
    );
    let run = std::fs::read_dir(moved.join("runs"))
        .expect("runs")
        .flatten()
        .next()
        .expect("a run")
        .path();
    assert_eq!(
        std::fs::read_to_string(run.join("analysis/mark.txt")).expect("mark"),
        "hi\n"
    );
}

#[test]
fn suite_analyze_steps_run_once_after_all_runs_and_again_with_analyze() {
    let p = project().file(
        "suite.yaml",
        "suite: t\nworkloads:\n  - { workload: workload.yaml, modes: [baseline, slow], repetitions: 3 }\n\
         analyze:\n  count:\n    run: \"wc -l < {{ artifact.dir }}/summary.csv > {{ artifact.dir }}/rows.txt; echo counted\"\n",
    );
    p.run(&[], 0);
    let art = p.artifact();
    // The header and four rows, read after the summaries were written.
    assert_eq!(
        std::fs::read_to_string(art.join("rows.txt"))
            .expect("rows.txt")
            .trim(),
        "5"
    );
    assert_eq!(
        std::fs::read_to_string(art.join("logs/count@suite.out")).expect("log"),
        "counted\n"
    );
    let suite: serde_json::Value =
        serde_json::from_slice(&std::fs::read(art.join("suite.json")).expect("suite.json"))
            .expect("json");
    assert_eq!(suite["analyze"][0]["name"], "count");
    std::fs::remove_file(art.join("rows.txt")).expect("rm");
    Flow::new()
        .args(["analyze", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(0);
    assert!(art.join("rows.txt").exists(), "flow analyze runs it again");
    // A failing one fails `flow analyze` and says which.
    let bad = p.file(
        "suite.yaml",
        "suite: t\nworkloads:\n  - { workload: workload.yaml }\nanalyze:\n  broken: { run: \"exit 3\" }\n",
    );
    let (_, stderr) = bad.run(&[], 0);
    assert!(
        stderr.contains("warning: analyze step `broken`: exited with 3"),
        "{stderr}"
    );
    let (_, stderr) = Flow::new()
        .args(["analyze", "--artifacts", "artifacts"])
        .cwd(bad.path())
        .expect(1);
    assert!(
        stderr.contains("error: analyze step `broken`: exited with 3"),
        "{stderr}"
    );
}

/// `junit.xml`: one case per run; a failed run carries its error and its
/// failing step's stderr; the document is well-formed XML (Python's parser).
#[test]
fn junit_xml_has_a_case_per_run_and_a_failure_with_its_stderr() {
    let p = Project::new()
        .file(
            "suite.yaml",
            "suite: j\nworkloads:\n  - workload: w.yaml\n    matrix: { code: [0, 3] }\n",
        )
        .file(
            "w.yaml",
            "workload: w\nparams: { code: 0 }\nsteps:\n  job: { run: \"echo 'bad <input> & more' >&2; exit {{ params.code }}\" }\n",
        );
    Flow::new()
        .args(["run", "--suite", "suite.yaml", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(1);
    let xml = p.path().join("artifacts/latest/junit.xml");
    let text = std::fs::read_to_string(&xml).expect("junit.xml");
    assert!(
        text.contains(r#"tests="2" failures="1" errors="0" skipped="0""#),
        "{text}"
    );
    assert!(text.contains(r#"classname="w.baseline""#), "{text}");
    assert!(text.contains("exited with 3"), "{text}");
    assert!(text.contains("bad &lt;input&gt; &amp; more"), "{text}");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, xml.etree.ElementTree as E\nr = E.parse(sys.argv[1]).getroot()\ncases = r.findall('./testsuite/testcase')\nprint(len(cases), sum(1 for c in cases if c.find('failure') is not None))",
        ])
        .arg(&xml)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2 1");
}

#[test]
fn compare_by_a_key_within_one_artifact_against_a_reference_value() {
    let p = Project::new()
        .file(
            "suite.yaml",
            "suite: t\nworkloads:\n  - { workload: workload.yaml, repetitions: 3, matrix: { base: [10, 20], step: [1, 5] } }\n",
        )
        .file(
            "workload.yaml",
            r#"workload: m
params: { base: 10, step: 1 }
steps:
  emit: { run: "echo value: $(( {{ params.base }} + {{ params.step }} * {{ run.repetition }} ))" }
metrics:
  v: { from: "logs/emit@local.out", regex: "value: (?P<value>[0-9]+)" }
"#,
        );
    p.run(&[], 0);
    let art = p.artifact();
    let id = art.file_name().expect("id").to_string_lossy().into_owned();
    let (out, _) = Flow::new()
        .args(["compare", &id, "--by", "base", "--ref", "10", "--json"])
        .cwd(p.path())
        .expect(0);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let rows = v["rows"].as_array().expect("rows");
    // base=20 against base=10 at each step: +10 either way.
    assert_eq!(rows.len(), 2, "{v:#}");
    for r in rows {
        assert_eq!(r["delta"], 10.0, "{r}");
        assert!(
            r["variant"]
                .as_str()
                .expect("variant")
                .starts_with("base=20,")
        );
    }
    // step=1 varies by 1 per repetition: significant; step=5 by 5: not.
    let sig: Vec<bool> = rows
        .iter()
        .map(|r| r["significant"].as_bool().expect("p"))
        .collect();
    assert_eq!(sig, vec![true, false], "{v:#}");
    let (_, err) = Flow::new()
        .args(["compare", &id, "--by", "base", "--ref", "15"])
        .cwd(p.path())
        .expect(2);
    assert_eq!(err, "error: `base` is never `15`; its values: `10`, `20`\n");

    // The same comparison in the report, kept by every later report.
    Flow::new()
        .args(["report", &id, "--by", "base", "--ref", "10"])
        .cwd(p.path())
        .expect(0);
    let html = || std::fs::read_to_string(art.join("report.html")).expect("report");
    let section = |h: &str| {
        let i = h.find("<h2>base against base=10</h2>")?;
        Some(h[i..].split("</table>").next()?.to_string())
    };
    let table = section(&html()).expect("a comparison section");
    assert_eq!(table.matches("<tr class=\"sig\">").count(), 1, "{table}");
    assert!(table.contains("base=20,step=1"), "{table}");
    assert!(table.contains("+"), "a positive delta: {table}");
    Flow::new()
        .args(["analyze", &id, "--no-steps"])
        .cwd(p.path())
        .expect(0);
    assert!(section(&html()).is_some(), "flow analyze keeps it");
    let (_, err) = Flow::new()
        .args(["report", &id, "--by", "nope", "--ref", "1"])
        .cwd(p.path())
        .expect(2);
    assert_eq!(
        err,
        "error: no variant has a key `nope`; keys: `base`, `step`\n"
    );
    assert!(
        section(&html()).is_some(),
        "a refused choice changes nothing"
    );
    Flow::new()
        .args(["report", &id, "--no-compare"])
        .cwd(p.path())
        .expect(0);
    assert!(section(&html()).is_none());
    assert!(!art.join("report.json").exists());
}

#[test]
fn metrics_from_workloads_takes_the_fixed_definitions_and_says_what_changed() {
    let p = project();
    p.run(&[], 0);
    let art = p.artifact();
    // The workload file mended after the runs: `broken` reads the log now,
    // `v` has another unit, `twice` is new.
    let text = std::fs::read_to_string(p.path().join("workload.yaml")).expect("workload");
    let text = text
        .replace(
            r#"broken: { from: "nothing/*.json", json: /x }"#,
            r#"broken: { from: "logs/emit@local.out", regex: "value: (?P<value>[0-9]+)" }
  twice: { from: "logs/emit@local.out", regex: "value: (?P<value>[0-9]+)", matches: all }"#,
        )
        .replace("unit: ms", "unit: us");
    std::fs::write(p.path().join("workload.yaml"), text).expect("write");
    let from_workloads = |code| {
        Flow::new()
            .args([
                "analyze",
                "--metrics-from-workloads",
                "--artifacts",
                "artifacts",
            ])
            .cwd(p.path())
            .expect(code)
    };

    // Without the flag, the runs' own definitions: nothing changes.
    let before = result_files(&art);
    Flow::new()
        .args(["analyze", "--no-steps", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(0);
    assert_eq!(result_files(&art), before);

    let (stdout, stderr) = from_workloads(0);
    assert_eq!(
        stdout.lines().take(3).collect::<Vec<_>>(),
        [
            "metric `broken`: changed in 6 runs",
            "metric `twice`: added in 6 runs",
            "metric `v`: changed in 6 runs",
        ],
        "{stderr}"
    );
    assert!(
        stdout.contains("6 runs: 18 metric values extracted, 0 without a value"),
        "{stdout}"
    );
    let csv = std::fs::read_to_string(art.join("summary.csv")).expect("summary.csv");
    assert!(
        csv.lines()
            .any(|l| l.starts_with("m,baseline,default,broken,,,3,3,12,")),
        "{csv}"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with("m,slow,default,v,us,lower,3,3,22,")),
        "{csv}"
    );

    // The artifact says which definitions gave its values.
    for e in std::fs::read_dir(art.join("runs")).expect("runs").flatten() {
        let plan: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.path().join("plan.json")).expect("plan"))
                .expect("json");
        let names: Vec<&str> = plan["metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .map(|m| m["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names, ["broken", "twice", "v"]);
    }
    let sj: serde_json::Value =
        serde_json::from_slice(&std::fs::read(art.join("suite.json")).expect("suite.json"))
            .expect("json");
    assert_eq!(sj["metric_changes"][0]["metrics"][1]["name"], "twice");
    assert_eq!(sj["metric_changes"][0]["metrics"][1]["change"], "added");

    // Again: nothing to change, and a plain analyze keeps the new values.
    let (stdout, _) = from_workloads(0);
    assert!(
        stdout.starts_with("metrics: as the workload files define them already\n"),
        "{stdout}"
    );
    let after = result_files(&art);
    Flow::new()
        .args(["analyze", "--artifacts", "artifacts"])
        .cwd(p.path())
        .expect(0);
    assert_eq!(result_files(&art), after);

    // A workload file that no longer loads: the error names it, and the
    // artifact is left as it was.
    std::fs::write(p.path().join("workload.yaml"), "workload: m\nsteps: [\n").expect("write");
    let (_, stderr) = from_workloads(2);
    assert!(stderr.contains("workload.yaml"), "{stderr}");
    assert_eq!(result_files(&art), after);
}
