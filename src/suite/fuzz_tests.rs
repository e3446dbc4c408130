//! A bounded mutation fuzz of the whole front end: the example suites,
//! workloads and inventories, mutated line by line and token by token, go
//! through loading, expansion and planning. Whatever comes out must be a
//! plan or rendered errors; a panic, a hang or an error without text fails.
//!
//! Deterministic (a fixed seed), and bounded in both cases and time so it
//! stays a few seconds in the test suite.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{LoadOptions, load};
use crate::expand::expand;
use crate::plan::{PlanOptions, Planner};

/// Bounds in the test suite; `FLOW_FUZZ_SECS=N` runs longer (and without
/// the case bound) by hand.
const MAX_CASES: usize = 4000;
const MAX_TIME: Duration = Duration::from_secs(4);

fn bounds() -> (usize, Duration) {
    match std::env::var("FLOW_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(secs) => (usize::MAX, Duration::from_secs(secs)),
        None => (MAX_CASES, MAX_TIME),
    }
}

/// Values a hostile or careless user writes.
const TOKENS: &[&str] = &[
    "..",
    ".",
    "-oProxyCommand=x",
    "null",
    "~",
    "[",
    "]",
    "{",
    "}",
    "\"{{ params.nope }}\"",
    "\"{{ hosts[params.x][0] }}\"",
    "\"{% if %}\"",
    "4294967295",
    "-1",
    "0",
    "1e309",
    "&a",
    "*a",
    "!!binary x",
    "\"a;touch x;b\"",
    "/etc/passwd",
    "../../x",
    "[1, 2, 3]",
    "{a: 1}",
    "all",
    "controller",
    "local",
    "''",
    "---",
    "\"\\u0000\"",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(text: &str, rng: &mut Rng) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for _ in 0..=rng.below(3) {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let i = rng.below(lines.len());
        match rng.below(6) {
            0 => {
                lines.remove(i);
            }
            1 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            2 => {
                let j = rng.below(lines.len());
                lines.swap(i, j);
            }
            3 => {
                // Replace the value after a `:` with a token.
                let t = TOKENS[rng.below(TOKENS.len())];
                if let Some(c) = lines[i].find(": ") {
                    lines[i].truncate(c + 2);
                    lines[i].push_str(t);
                } else {
                    lines[i].push_str(t);
                }
            }
            4 => {
                // Replace a key with a token.
                let t = TOKENS[rng.below(TOKENS.len())];
                let indent = lines[i].len() - lines[i].trim_start().len();
                if let Some(c) = lines[i].find(':') {
                    let rest = lines[i][c..].to_string();
                    lines[i] = format!("{}\"{}\"{rest}", " ".repeat(indent), t.replace('"', ""));
                }
            }
            _ => {
                let b = lines[i].len();
                let at = if b == 0 { 0 } else { rng.below(b) };
                if lines[i].is_char_boundary(at) {
                    let c = [' ', '\t', ':', '-', '#', '{', '"', '\''][rng.below(8)];
                    lines[i].insert(at, c);
                }
            }
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies the example project into `dir`, mutating `target`.
fn write_case(dir: &Path, target: &str, text: &str) {
    for sub in ["suites", "workloads", "hosts"] {
        let _ = std::fs::create_dir_all(dir.join(sub));
    }
    for f in [
        "suites/streaming.yaml",
        "suites/overhead.yaml",
        "workloads/streaming.yaml",
        "workloads/kv.yaml",
        "hosts/local.yaml",
        "hosts/example-cluster.yaml",
    ] {
        let content = if f == target {
            text.to_string()
        } else {
            std::fs::read_to_string(examples().join(f)).unwrap_or_default()
        };
        let _ = std::fs::write(dir.join(f), content);
    }
}

fn check_one(dir: &Path, suite: &str, hosts: Option<&str>) {
    let opts = LoadOptions {
        hosts: hosts.map(|h| dir.join(h)),
        set: Vec::new(),
        max_runs: Some(10_000),
        planned_nodes: None,
        ..Default::default()
    };
    let spec = dir.join(suite);
    let s = match load(&spec.display().to_string(), &opts) {
        Ok(s) => s,
        Err(f) => {
            let text = f.render();
            assert!(text.contains("error: "), "an error without text: {text:?}");
            return;
        }
    };
    let exp = match expand(&s) {
        Ok(e) => e,
        Err(d) => {
            assert!(!d.render(&s.sources).is_empty());
            return;
        }
    };
    let opts = PlanOptions {
        artifact_dir: dir.join("artifacts/x"),
    };
    let Ok(planner) = Planner::new(&s, &exp, &opts) else {
        return;
    };
    for i in 0..planner.len().min(20) {
        if let Err(d) = planner.plan(i) {
            assert!(!d.render(&s.sources).is_empty());
        }
    }
}

#[test]
fn mutated_examples_give_plans_or_errors_never_panics() {
    let targets = [
        ("suites/streaming.yaml", "suites/streaming.yaml", None),
        ("workloads/streaming.yaml", "suites/streaming.yaml", None),
        ("suites/overhead.yaml", "suites/overhead.yaml", None),
        ("workloads/kv.yaml", "suites/overhead.yaml", None),
        (
            "hosts/example-cluster.yaml",
            "suites/streaming.yaml",
            Some("hosts/example-cluster.yaml"),
        ),
    ];
    let originals: Vec<String> = targets
        .iter()
        .map(|(t, _, _)| std::fs::read_to_string(examples().join(t)).unwrap_or_default())
        .collect();
    assert!(
        originals.iter().all(|o| !o.is_empty()),
        "examples are there"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let (max_cases, max_time) = bounds();
    let seed = std::env::var("FLOW_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_f10e_2026_1123);
    let mut rng = Rng(seed);
    let start = Instant::now();
    let mut cases = 0;
    while cases < max_cases && start.elapsed() < max_time {
        let k = rng.below(targets.len());
        let (target, suite, hosts) = targets[k];
        let text = mutate(&originals[k], &mut rng);
        write_case(dir.path(), target, &text);
        let outcome = std::panic::catch_unwind(|| check_one(dir.path(), suite, hosts));
        assert!(outcome.is_ok(), "panicked on {target} mutated to:\n{text}");
        cases += 1;
    }
    eprintln!("{cases} mutated cases in {:?}", start.elapsed());
    assert!(cases >= 100, "only {cases} cases in {max_time:?}");
}
