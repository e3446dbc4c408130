//! Reading a suite and everything it names from disk: the suite file, its
//! workload files, the inventory, and the `--set` arguments. This is the
//! only part of planning that touches the filesystem.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::inventory::Inventory;
use super::model::{Entry, ModeRef, Suite};
use super::raw::{RawOverlay, RawSuite};
use super::workload::Workload;
use super::workload::{check_env_keys, check_name};
use crate::diag::{Diagnostic, Diagnostics, FileId, Sources, Span, did_you_mean, list_names};
use crate::names::NameKind;
use crate::yaml::{Key, Node, NodeKind, decode, decode_partial, parse};

/// What the command line adds to a suite.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--hosts FILE`: replaces the suite's inventory.
    pub hosts: Option<PathBuf>,
    /// `--set key.path=value`, in order.
    pub set: Vec<String>,
    /// `--max-runs N`: the most runs the suite may expand to; `None` means
    /// [`DEFAULT_MAX_RUNS`].
    pub max_runs: Option<u64>,
    /// Plan for a Slurm allocation not granted yet, of this many nodes
    /// (`None`: the fewest the rules fit); see [`Inventory::from_node`].
    pub planned_nodes: Option<Option<usize>>,
    /// `--annotate KEY=VALUE`, over the suite's and entries' annotations.
    pub annotate: Vec<String>,
    /// Source states an artifact recorded, used instead of the work
    /// trees' (a resume runs the code the artifact ran).
    pub pinned: BTreeMap<String, super::code::Pinned>,
}

/// How many runs a suite may expand to unless `--max-runs` says otherwise.
pub const DEFAULT_MAX_RUNS: u64 = 1_000_000;

/// Loading failed: every diagnostic, with the sources to render them.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    pub sources: Sources,
    pub diags: Diagnostics,
}

impl LoadFailure {
    pub fn render(&self) -> String {
        self.diags.render(&self.sources)
    }
}

/// Top-level keys of a workload: `--set` paths starting with one of these
/// address the workload; any other key is a param (`--set port=1` is
/// `--set params.port=1`).
const WORKLOAD_KEYS: &[&str] = &[
    "params",
    "steps",
    "files",
    "env",
    "metrics",
    "exclusive",
    "clock_every",
    "description",
];

/// Finds a suite by name (`suites/NAME.yaml`) or path. A path is returned
/// as given: reading it says what is wrong with it.
pub fn resolve_suite_path(spec: &str) -> Result<PathBuf, String> {
    if spec.is_empty() {
        return Err("`--suite` is empty: give a suite name or a path to a suite file".into());
    }
    let as_path = Path::new(spec);
    let looks_like_path = spec.contains('/') || spec.ends_with(".yaml") || spec.ends_with(".yml");
    if looks_like_path || as_path.exists() {
        return Ok(as_path.to_path_buf());
    }
    for ext in ["yaml", "yml"] {
        let p = Path::new("suites").join(format!("{spec}.{ext}"));
        if p.is_file() {
            return Ok(p);
        }
    }
    let mut known: Vec<String> = std::fs::read_dir("suites")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml"))
                .then(|| p.file_stem()?.to_str().map(str::to_string))
                .flatten()
        })
        .collect();
    known.sort();
    let hint = match did_you_mean(spec, known.iter().map(String::as_str)) {
        Some(h) => format!("; {h}"),
        None if known.is_empty() => "; there is no `suites/` folder here (run flow from your project's root, or pass a path)".into(),
        None => format!("; suites here: {}", list_names(known.iter().map(String::as_str))),
    };
    Err(format!(
        "no suite named `{spec}`: `suites/{spec}.yaml` does not exist{hint}"
    ))
}

/// Files larger than this are refused before they are read.
pub const MAX_SOURCE_BYTES: u64 = 64 << 20;

/// Reads a suite, workload or inventory file. Only a regular file is read:
/// a folder, a FIFO (which would block forever), a device (`/dev/zero`,
/// endless) or a socket is refused at once, as is a file over
/// [`MAX_SOURCE_BYTES`]. Returns a message and maybe a hint.
pub fn read_source(path: &Path, what: &str) -> Result<String, (String, Option<String>)> {
    use std::io::Read as _;
    use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
    let shown = crate::diag::display_path(path);
    if path.as_os_str().is_empty() {
        return Err((
            format!("the {what} path is empty"),
            Some(format!("give the path of {} {what} file", article(what))),
        ));
    }
    let fail = |e: std::io::Error| -> (String, Option<String>) {
        if e.kind() == std::io::ErrorKind::NotFound {
            (format!("{what} file `{shown}` does not exist"), None)
        } else {
            (format!("cannot read {what} file `{shown}`: {e}"), None)
        }
    };
    // Non-blocking, so that opening a FIFO with no writer returns at once.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(fail)?;
    let meta = file.metadata().map_err(fail)?;
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        Some("a folder")
    } else if ft.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if ft.is_char_device() || ft.is_block_device() {
        Some("a device")
    } else if ft.is_socket() {
        Some("a socket")
    } else {
        None
    };
    if let Some(kind) = kind {
        return Err((
            format!("{what} `{shown}` is {kind}, not a file"),
            Some(format!(
                "give the path of {} {what} file (YAML)",
                article(what)
            )),
        ));
    }
    if meta.len() > MAX_SOURCE_BYTES {
        return Err((
            format!(
                "{what} file `{shown}` is {} MiB; flow reads files of at most {} MiB",
                meta.len() >> 20,
                MAX_SOURCE_BYTES >> 20
            ),
            None,
        ));
    }
    let mut text = String::new();
    file.take(MAX_SOURCE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                (format!("{what} file `{shown}` is not UTF-8 text"), None)
            } else {
                fail(e)
            }
        })?;
    Ok(text)
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

struct Loader {
    sources: Sources,
    diags: Diagnostics,
    /// Workload files already read, by canonical path.
    workloads: BTreeMap<PathBuf, Option<Node>>,
}

impl Loader {
    fn read(
        &mut self,
        path: &Path,
        referenced_at: Option<Span>,
        what: &str,
    ) -> Option<(Node, FileId)> {
        let text = match read_source(path, what) {
            Ok(t) => t,
            Err((message, help)) => {
                self.diags
                    .push(Diagnostic::new(referenced_at, message).with_help_opt(help));
                return None;
            }
        };
        let id = self.sources.add(path, text);
        let text = self
            .sources
            .get(id)
            .map(|f| f.text.as_str())
            .unwrap_or_default();
        match parse(text, id) {
            Ok(node) => Some((node, id)),
            Err(d) => {
                self.diags.push(d);
                None
            }
        }
    }
}

/// Loads and validates a suite with everything it refers to. Every problem
/// found is reported, not just the first.
pub fn load(spec: &str, opts: &LoadOptions) -> Result<Suite, LoadFailure> {
    let mut l = Loader {
        sources: Sources::default(),
        diags: Diagnostics::new(),
        workloads: BTreeMap::new(),
    };
    let fail = |l: Loader| {
        let mut diags = l.diags;
        diags.finish();
        Err(LoadFailure {
            sources: l.sources,
            diags,
        })
    };
    let path = match resolve_suite_path(spec) {
        Ok(p) => p,
        Err(msg) => {
            l.diags.push(Diagnostic::new(None, msg));
            return fail(l);
        }
    };
    let Some((root, file)) = l.read(&path, None, "suite") else {
        return fail(l);
    };
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    // Keep going with what did decode, so errors in workload files and the
    // inventory are reported together with the suite's own.
    let (raw, root) = match decode_partial::<RawSuite>(&root, &mut l.diags) {
        Some((raw, pruned)) => (Some(raw), pruned),
        None => (None, root),
    };

    // The inventory: --hosts, else the suite's `hosts:`, else built in.
    let inventory = match (&opts.hosts, root.get("hosts")) {
        (Some(p), _) if crate::slurm::is_shorthand(p) => {
            load_shorthand(&mut l, p, opts.planned_nodes)
        }
        (Some(p), _) if hosts_command(p).is_some() => {
            let command = hosts_command(p).unwrap_or_default();
            let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
            load_inventory_command(&mut l, &command, &cwd, None, opts.planned_nodes).map(
                |mut inv| {
                    inv.source = Some(p.clone());
                    inv
                },
            )
        }
        (None, Some(n)) if n.get("command").is_some() => match n
            .get("command")
            .and_then(Node::as_str)
        {
            Some(c) if !c.trim().is_empty() => {
                let at = n.get("command").map(|c| c.span);
                // Run again by a resume, which reads the suite again.
                let cwd = crate::paths::absolute(if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    &dir
                });
                load_inventory_command(&mut l, c, &cwd, at, opts.planned_nodes).map(|mut inv| {
                    inv.source = None;
                    inv
                })
            }
            _ => {
                l.diags.push(
                    Diagnostic::at(n.span, "`hosts: { command }` needs a command")
                        .with_help("a shell command that prints an inventory (YAML or JSON), run in the suite file's folder"),
                );
                None
            }
        },
        (Some(p), _) => load_inventory(&mut l, p, None, opts.planned_nodes),
        (None, Some(n)) if !n.is_null() => match n.as_str() {
            Some("") => {
                l.diags
                    .push(Diagnostic::at(n.span, "`hosts:` is empty").with_help(
                    "give the path of an inventory file, or remove `hosts:` to run on this machine",
                ));
                None
            }
            Some(rel) => load_inventory(&mut l, &dir.join(rel), Some(n.span), opts.planned_nodes),
            None => None,
        },
        _ => Some(Inventory::builtin()),
    };

    let set = parse_set_args(&mut l, &opts.set);

    let mut entries = Vec::new();
    let mut code = Vec::new();
    let mut annotations = BTreeMap::new();
    if let Some(raw) = &raw {
        code = super::code::load_sources(
            &raw.sources,
            root.get("sources"),
            &dir,
            &opts.pinned,
            &mut l.diags,
        );
        annotations =
            super::code::load_annotations(root.get("annotations"), &annotations, &mut l.diags);
        check_name(
            NameKind::Suite,
            &raw.suite,
            root.get("suite").map_or(root.span, |n| n.span),
            &mut l.diags,
        );
        let analyze = root.get("analyze");
        for name in raw.analyze.keys() {
            let at = analyze
                .and_then(|a| a.get_key(name))
                .map_or(root.span, |k| k.span);
            check_name(NameKind::Step, name, at, &mut l.diags);
            check_env_keys(
                analyze.and_then(|a| a.get(name)).and_then(|s| s.get("env")),
                &mut l.diags,
            );
        }
        if raw.workloads.is_empty() {
            l.diags.push(
                Diagnostic::at(
                    root.get_key("workloads").map_or(root.span, |k| k.span),
                    "the suite lists no workloads",
                )
                .with_help("add an entry such as `- workload: ../workloads/NAME.yaml`"),
            );
        }
        let entry_nodes = root
            .get("workloads")
            .and_then(Node::as_seq)
            .unwrap_or_default();
        for (index, (re, en)) in raw.workloads.iter().zip(entry_nodes).enumerate() {
            if let Some(mut e) = load_entry(&mut l, index, re, en, &dir) {
                e.mutations = super::code::load_mutations(
                    &re.mutations,
                    en.get("mutations"),
                    &code,
                    &dir,
                    &mut l.diags,
                );
                e.annotations = super::code::load_annotations(
                    en.get("annotations"),
                    &annotations,
                    &mut l.diags,
                );
                super::code::cli_annotations(&opts.annotate, &mut e.annotations, &mut l.diags);
                entries.push(e);
            }
        }
    }
    super::code::cli_annotations(&opts.annotate, &mut annotations, &mut l.diags);
    let (mut setup, mut teardown) = (Vec::new(), Vec::new());
    if let Some(raw) = &raw {
        use super::phases::{Phase, load_phase};
        setup = load_phase(
            Phase::Setup,
            &raw.setup,
            root.get("setup"),
            inventory.as_ref(),
            &code,
            &mut l.diags,
        );
        teardown = load_phase(
            Phase::Teardown,
            &raw.teardown,
            root.get("teardown"),
            inventory.as_ref(),
            &code,
            &mut l.diags,
        );
    }
    let (Some(raw), Some(inventory), true) = (raw, inventory, l.diags.is_empty()) else {
        l.diags.finish();
        return fail(l);
    };
    Ok(Suite {
        name: raw.suite,
        description: raw.description,
        path,
        file,
        inventory,
        defaults: root.get("defaults").filter(|n| !n.is_null()).cloned(),
        entries,
        set,
        set_args: opts.set.clone(),
        max_runs: opts.max_runs.unwrap_or(DEFAULT_MAX_RUNS),
        sources: l.sources,
        analyze: raw.analyze.into_iter().collect(),
        code,
        experiment: crate::sources::capture(crate::sources::EXPERIMENT, &dir, true).ok(),
        annotations,
        annotate_args: opts.annotate.clone(),
        setup,
        teardown,
    })
}

/// A suite's `provision:` and `deprovision:` commands, read before the
/// rest of it (its hosts may not exist yet).
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    pub provision: Option<super::raw::Command>,
    pub deprovision: Option<super::raw::Command>,
    /// The suite file's folder, where they run.
    pub dir: PathBuf,
}

/// Reads the hooks of the suite `spec`. A suite that cannot be read has
/// none here: loading it says why.
pub fn read_hooks(spec: &str) -> Result<Hooks, LoadFailure> {
    let mut l = Loader {
        sources: Sources::default(),
        diags: Diagnostics::new(),
        workloads: BTreeMap::new(),
    };
    let Ok(path) = resolve_suite_path(spec) else {
        return Ok(Hooks::default());
    };
    let Some((root, _)) = l.read(&path, None, "suite") else {
        return Ok(Hooks::default());
    };
    let mut one = |key: &str| {
        root.get(key)
            .filter(|n| !n.is_null())
            .and_then(|n| decode::<super::raw::Command>(n, &mut l.diags))
    };
    let hooks = Hooks {
        provision: one("provision"),
        deprovision: one("deprovision"),
        dir: crate::paths::absolute(path.parent().unwrap_or(Path::new("."))),
    };
    if l.diags.is_empty() {
        Ok(hooks)
    } else {
        l.diags.finish();
        Err(LoadFailure {
            sources: l.sources,
            diags: l.diags,
        })
    }
}

/// `--hosts cmd:COMMAND`: the command, when `spec` is one.
pub fn hosts_command(spec: &Path) -> Option<String> {
    spec.to_str()?
        .strip_prefix("cmd:")
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
}

/// How many lines of a failed hosts command's stderr an error quotes.
const COMMAND_ERR_LINES: usize = 10;

/// An inventory printed (as YAML or JSON) by `command`, run by `sh -c` in
/// `cwd`. Its output is a source of its own, so errors in it are located.
fn load_inventory_command(
    l: &mut Loader,
    command: &str,
    cwd: &Path,
    at: Option<Span>,
    planned: Option<Option<usize>>,
) -> Option<Inventory> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            l.diags.push(Diagnostic::new(
                at,
                format!("cannot run the hosts command `{command}`: {e}"),
            ));
            return None;
        }
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(COMMAND_ERR_LINES)..].join("\n    ");
        let how = match out.status.code() {
            Some(c) => format!("exited with {c}"),
            None => "was killed by a signal".into(),
        };
        l.diags.push(
            Diagnostic::new(at, format!("the hosts command `{command}` {how}")).with_help(
                if tail.is_empty() {
                    "it said nothing on stderr; it must print an inventory and exit 0".to_string()
                } else {
                    format!("its last words:\n    {tail}")
                },
            ),
        );
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if text.trim().is_empty() {
        l.diags.push(
            Diagnostic::new(at, format!("the hosts command `{command}` printed nothing"))
                .with_help("it must print an inventory, YAML or JSON, on stdout"),
        );
        return None;
    }
    let pseudo = cwd.join("<hosts command>");
    inventory_text(l, "<output of the hosts command>", &pseudo, text, planned)
}

/// An inventory written somewhere other than a file (the `--hosts`
/// shorthand, a command's output), as a source of its own named `name`,
/// so errors in it are located; `path` stands for it.
fn inventory_text(
    l: &mut Loader,
    name: &str,
    path: &Path,
    text: String,
    planned: Option<Option<usize>>,
) -> Option<Inventory> {
    let id = l.sources.add_named(name.into(), path.to_path_buf(), text);
    let text = l
        .sources
        .get(id)
        .map(|f| f.text.clone())
        .unwrap_or_default();
    match parse(&text, id) {
        Ok(node) => Inventory::from_node(&node, path, &mut l.diags, planned),
        Err(d) => {
            l.diags.push(d);
            None
        }
    }
}

/// Loads an inventory file on its own (`flow hosts`, `flow exec`,
/// `flow ssh`), or the output of `cmd:COMMAND`.
pub fn load_inventory_file(path: &Path) -> Result<Inventory, LoadFailure> {
    let mut l = Loader {
        sources: Sources::default(),
        diags: Diagnostics::new(),
        workloads: BTreeMap::new(),
    };
    let loaded = match hosts_command(path) {
        Some(c) => {
            let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
            load_inventory_command(&mut l, &c, &cwd, None, None)
        }
        None => load_inventory(&mut l, path, None, None),
    };
    match loaded {
        Some(inv) if l.diags.is_empty() => Ok(inv),
        _ => {
            l.diags.finish();
            Err(LoadFailure {
                sources: l.sources,
                diags: l.diags,
            })
        }
    }
}

/// `--hosts slurm:ROLE=RULE,…`: an allocation inventory written on the
/// command line, read as the YAML it stands for.
fn load_shorthand(
    l: &mut Loader,
    spec: &Path,
    planned: Option<Option<usize>>,
) -> Option<Inventory> {
    let text = match crate::slurm::shorthand_yaml(&spec.to_string_lossy()) {
        Ok(t) => t,
        Err(e) => {
            l.diags.push(Diagnostic::new(None, e).with_help(
                "`--hosts slurm:coordinator=1,worker=rest` puts roles on the allocation's nodes (a count, `rest` or `all` each); an inventory file with `provider: slurm` says more",
            ));
            return None;
        }
    };
    inventory_text(l, "<--hosts>", spec, text, planned)
}

fn load_inventory(
    l: &mut Loader,
    path: &Path,
    at: Option<Span>,
    planned: Option<Option<usize>>,
) -> Option<Inventory> {
    let (node, _) = l.read(path, at, "inventory")?;
    Inventory::from_node(&node, path, &mut l.diags, planned)
}

fn load_entry(
    l: &mut Loader,
    index: usize,
    re: &super::raw::RawEntry,
    en: &Node,
    dir: &Path,
) -> Option<Entry> {
    let wl_span = en.get("workload").map_or(en.span, |n| n.span);
    if re.workload.is_empty() {
        l.diags.push(
            Diagnostic::at(wl_span, "`workload:` is empty")
                .with_help("give the path of a workload file, relative to the suite file"),
        );
        return None;
    }
    let wpath = dir.join(&re.workload);
    let key = std::fs::canonicalize(&wpath).unwrap_or_else(|_| wpath.clone());
    let node = match l.workloads.get(&key) {
        Some(cached) => cached.clone(),
        None => {
            let loaded = l
                .read(&wpath, Some(wl_span), "workload")
                .and_then(|(node, _)| {
                    // The file on its own must be a valid workload (modes are
                    // checked as overlays below, and again once merged).
                    let mut plain = node.clone();
                    if let Some(m) = plain.as_map_mut() {
                        m.retain(|(k, _)| k.name != "modes");
                    }
                    Workload::from_node(&plain, &mut l.diags).map(|_| node)
                });
            l.workloads.insert(key, loaded.clone());
            loaded
        }
    }?;
    let name = node
        .get("workload")
        .map(|n| n.to_string())
        .unwrap_or_default();
    let shown = if name.is_empty() {
        re.workload.clone()
    } else {
        name.clone()
    };
    let defined: BTreeMap<String, Node> = node
        .get("modes")
        .and_then(Node::as_map)
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| (k.name.clone(), v.clone()))
        .collect();
    let before = l.diags.len();
    for (k, v) in node.get("modes").and_then(Node::as_map).unwrap_or_default() {
        check_name(NameKind::Mode, &k.name, k.span, &mut l.diags);
        let _: Option<RawOverlay> = decode(v, &mut l.diags);
    }
    let mode_nodes = en.get("modes").and_then(Node::as_seq).unwrap_or_default();
    let mut modes = Vec::new();
    if mode_nodes.is_empty() {
        modes.push(ModeRef {
            name: "baseline".into(),
            span: wl_span,
            overlay: defined.get("baseline").cloned(),
        });
    }
    for m in mode_nodes {
        let name = m.to_string();
        if modes.iter().any(|x: &ModeRef| x.name == name) {
            l.diags.push(Diagnostic::at(
                m.span,
                format!("mode `{name}` is listed twice"),
            ));
            continue;
        }
        match defined.get(&name) {
            Some(overlay) => modes.push(ModeRef {
                name,
                span: m.span,
                overlay: Some(overlay.clone()),
            }),
            None if name == "baseline" => modes.push(ModeRef {
                name,
                span: m.span,
                overlay: None,
            }),
            None => {
                let mut known: Vec<&str> = defined.keys().map(String::as_str).collect();
                if !known.contains(&"baseline") {
                    known.insert(0, "baseline");
                }
                let help = did_you_mean(&name, known.iter().copied()).unwrap_or_else(|| {
                    format!("modes of `{shown}`: {}", list_names(known.iter().copied()))
                });
                l.diags.push(
                    Diagnostic::at(
                        m.span,
                        format!("unknown mode `{name}` for workload `{shown}`"),
                    )
                    .with_help(help),
                );
            }
        }
    }
    if re.repetitions == Some(0) {
        let span = en.get("repetitions").map_or(en.span, |n| n.span);
        l.diags
            .push(Diagnostic::at(span, "`repetitions` must be at least 1"));
    }
    let mut matrix = Vec::new();
    for (k, v) in en.get("matrix").and_then(Node::as_map).unwrap_or_default() {
        let values = v.as_seq().unwrap_or_default().to_vec();
        if values.is_empty() {
            l.diags.push(
                Diagnostic::at(v.span, format!("matrix key `{}` has no values", k.name))
                    .with_help("give a list with at least one value, or remove the key"),
            );
        }
        matrix.push((k.clone(), values));
    }
    let rows = |key: &str| -> Vec<Node> {
        en.get(key)
            .and_then(Node::as_seq)
            .unwrap_or_default()
            .to_vec()
    };
    let mut workload = node;
    if let Some(m) = workload.as_map_mut() {
        m.retain(|(k, _)| k.name != "modes");
    }
    (l.diags.len() == before).then(|| Entry {
        index,
        span: wl_span,
        workload_path: wpath,
        workload,
        workload_name: name,
        modes,
        repetitions: re.repetitions.unwrap_or(1),
        matrix,
        exclude: rows("exclude"),
        include: rows("include"),
        overrides: en.get("overrides").filter(|n| !n.is_null()).cloned(),
        mutations: Vec::new(),
        annotations: BTreeMap::new(),
    })
}

/// Turns `--set` arguments into one overlay over the workload. The
/// arguments become a pseudo-file so errors can point at them.
fn parse_set_args(l: &mut Loader, args: &[String]) -> Option<Node> {
    if args.is_empty() {
        return None;
    }
    let text = args.join("\n");
    let file = l.sources.add_named("<--set>".into(), PathBuf::new(), text);
    let mut overlay = Node::empty_map(Span {
        file,
        line: 1,
        col: 1,
        len: 1,
    });
    for (i, arg) in args.iter().enumerate() {
        let line = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let whole = Span {
            file,
            line,
            col: 1,
            len: u32::try_from(arg.chars().count()).unwrap_or(1),
        };
        let Some((key, value)) = arg.split_once('=') else {
            l.diags.push(
                Diagnostic::at(whole, format!("`--set {arg}` has no `=`"))
                    .with_help("write `--set key=value`, e.g. `--set num_events=10`"),
            );
            continue;
        };
        let key_span = Span {
            len: u32::try_from(key.chars().count()).unwrap_or(1),
            ..whole
        };
        let value_span = Span {
            col: key_span.len + 2,
            len: u32::try_from(value.chars().count()).unwrap_or(1),
            ..whole
        };
        let segs: Vec<&str> = key.trim().split('.').collect();
        if segs.iter().any(|s| s.is_empty()) {
            l.diags.push(Diagnostic::at(
                key_span,
                format!("`--set`: invalid key `{key}`"),
            ));
            continue;
        }
        let mut path: Vec<&str> = Vec::new();
        if !WORKLOAD_KEYS.contains(&segs[0]) {
            path.push("params");
        }
        path.extend(segs.iter().copied());
        // The value is YAML. One that does not parse is a plain string
        // (`--set who=@me`), unless it starts like a list, a map or a quoted
        // string: then it was meant as one and the mistake is reported.
        let mut value_node = match parse(value, file) {
            Ok(n) => n,
            Err(d) if value.trim_start().starts_with(['[', '{', '"', '\'']) => {
                let reason = d
                    .message
                    .strip_prefix("invalid YAML: ")
                    .unwrap_or(&d.message);
                l.diags.push(
                    Diagnostic::at(value_span, format!("`--set {key}`: the value is not valid YAML: {reason}"))
                        .with_help("a value starting with `[`, `{` or a quote is read as YAML: close it, or quote the whole value for a string (`--set 'k=\"[1,2\"'`)"),
                );
                continue;
            }
            Err(_) => Node::new(NodeKind::Str(value.to_string()), value_span),
        };
        if value_node.is_null() && matches!(segs.as_slice(), ["steps" | "params"]) {
            l.diags.push(
                Diagnostic::at(
                    whole,
                    format!(
                        "`--set {arg}` would remove every one of the workload's {}",
                        segs[0]
                    ),
                )
                .with_help(format!("remove one with `--set {}.NAME=null`", segs[0])),
            );
            continue;
        }
        respan(&mut value_node, value_span);
        if let Err(msg) = overlay.set_path(&path, key_span, value_node) {
            l.diags
                .push(Diagnostic::at(key_span, format!("`--set {key}`: {msg}")));
        }
    }
    Some(overlay)
}

fn respan(node: &mut Node, span: Span) {
    node.span = span;
    match &mut node.kind {
        NodeKind::Seq(items) => items.iter_mut().for_each(|n| respan(n, span)),
        NodeKind::Map(m) => m.iter_mut().for_each(|(k, v): &mut (Key, Node)| {
            k.span = span;
            respan(v, span);
        }),
        _ => {}
    }
}
