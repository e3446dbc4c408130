//! The inventory: named hosts with their roles, and how steps select them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::raw::{RawHost, RawInventory};
use crate::diag::{Diagnostic, Diagnostics, Span, did_you_mean, list_names};
use crate::names::{HostField, NameKind};
use crate::yaml::{Node, decode};

/// The address that means "this machine, no ssh".
pub const LOCAL: &str = "local";

/// One host, with `defaults` applied. Deserialize reads it back from an
/// artifact's `suite.json` (`flow reap`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Host {
    pub name: String,
    /// As written; `local` for the controller itself.
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jump: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// As written; `None` means the default (see [`Host::workdir_for`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    pub roles: Vec<String>,
    pub vars: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub ssh_options: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_config: Option<PathBuf>,
    /// How steps reach the host when it is not local: over ssh (the
    /// default), or as a job step of the allocation flow runs in.
    #[serde(default, skip_serializing_if = "Transport::is_ssh")]
    pub transport: Transport,
    /// The host's place in the allocation it came from (0-based), for a
    /// host of a `provider: slurm` inventory. Runs are planned on places,
    /// not on node names: two allocations of the same shape plan the same
    /// runs (a shard in one job, a resume in the next).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<usize>,
}

/// How a remote host is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Ssh,
    /// `srun --nodelist=<name> -N1 -n1 --overlap`, inside the allocation.
    Srun,
}

impl Transport {
    pub fn is_ssh(&self) -> bool {
        *self == Transport::Ssh
    }
}

impl Host {
    pub fn is_local(&self) -> bool {
        self.address == LOCAL
    }

    /// The address templates see: `localhost` for a local host, so a workload
    /// pointing clients at a server's address runs unchanged on one machine.
    pub fn template_address(&self) -> &str {
        if self.is_local() {
            "localhost"
        } else {
            &self.address
        }
    }

    /// A run's folder on this host. Each invocation has its own
    /// (`<workdir>/runs/<invocation>/<host>/<run-id>`, see
    /// [`invocation_folder`]), so two invocations of the same suite on the
    /// same hosts never share files or stop each other's steps; and each
    /// host has its own below it, so hosts whose workdir is on one shared
    /// file system (a cluster's home or scratch) never write into each
    /// other's run dirs. A local host without a `workdir` works inside the
    /// artifact itself (`<artifact>/work/<host>/runs/<run-id>`).
    pub fn run_dir_for(&self, artifact_dir: &Path, invocation: &str, run_id: &str) -> String {
        let workdir = self.workdir_for(artifact_dir);
        if self.workdir.is_none() && self.is_local() {
            return format!("{workdir}/runs/{run_id}");
        }
        format!("{workdir}/runs/{invocation}/{}/{run_id}", self.name)
    }

    /// The working directory on the host. A local host without one works
    /// inside the artifact (`<artifact>/work/<host>`), so nothing is left
    /// outside it; a remote host defaults to `~/flow`.
    pub fn workdir_for(&self, artifact_dir: &Path) -> String {
        match &self.workdir {
            Some(w) => w.trim_end_matches('/').to_string(),
            None if self.is_local() => artifact_dir
                .join("work")
                .join(&self.name)
                .display()
                .to_string(),
            None => "~/flow".to_string(),
        }
    }
}

/// The hosts of a suite.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Inventory {
    /// Hosts in file order (that is the order of `hosts.<role>` lists).
    pub hosts: Vec<Host>,
    /// The file it was read from; `None` for the built-in default.
    pub source: Option<PathBuf>,
    /// The built-in default: one local host that carries every role.
    pub builtin: bool,
}

/// How a selector (`on:`, `from:`) failed to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSelector {
    pub message: String,
    pub help: Option<String>,
}

impl Inventory {
    /// The built-in inventory: a single host `local` carrying every role.
    pub fn builtin() -> Self {
        Inventory {
            hosts: vec![Host {
                name: "local".into(),
                address: LOCAL.into(),
                user: None,
                port: None,
                jump: None,
                identity: None,
                workdir: None,
                roles: Vec::new(),
                vars: serde_json::Map::new(),
                ssh_options: BTreeMap::new(),
                ssh_config: None,
                transport: Transport::Ssh,
                slot: None,
            }],
            source: None,
            builtin: true,
        }
    }

    /// Builds an inventory from a parsed file, collecting every error. One
    /// with `provider: slurm` takes its hosts from the allocation named by
    /// `SLURM_JOB_NODELIST`.
    ///
    /// `planned`: for an allocation not granted yet (`flow run --slurm`),
    /// of this many nodes (`None`: the fewest its rules fit), named
    /// `slot1` … in its place.
    pub fn from_node(
        node: &Node,
        path: &Path,
        diags: &mut Diagnostics,
        planned: Option<Option<usize>>,
    ) -> Option<Self> {
        let raw = node.get("provider").is_some() || node.get("roles").is_some();
        let nodelist = match planned {
            Some(n) if raw => Some(planned_nodelist(node, n)),
            _ => std::env::var("SLURM_JOB_NODELIST")
                .or_else(|_| std::env::var("SLURM_NODELIST"))
                .ok(),
        };
        Inventory::from_node_with(
            node,
            path,
            diags,
            nodelist.as_deref(),
            &|nodes: &[String]| match planned {
                Some(_) => std::collections::HashMap::new(),
                None => crate::slurm::node_addresses(nodes),
            },
        )
    }

    /// [`Inventory::from_node`] with the allocation's node list given, and
    /// how to find its nodes' addresses.
    pub fn from_node_with(
        node: &Node,
        path: &Path,
        diags: &mut Diagnostics,
        nodelist: Option<&str>,
        addresses: &dyn Fn(&[String]) -> std::collections::HashMap<String, String>,
    ) -> Option<Self> {
        let raw: RawInventory = decode(node, diags)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        if raw.provider.is_some() || raw.roles.is_some() || raw.role_vars.is_some() {
            return from_allocation(&raw, node, path, diags, nodelist, addresses);
        }
        let defaults = raw.defaults.unwrap_or_default();
        let order: Vec<&str> = node
            .get("hosts")
            .and_then(Node::as_map)
            .map(|m| m.iter().map(|(k, _)| k.name.as_str()).collect())
            .unwrap_or_default();
        let mut hosts = Vec::new();
        let before = diags.len();
        check_host_fields(&defaults, node.get("defaults"), diags);
        for name in order {
            let Some(h) = raw.hosts.get(name) else {
                continue;
            };
            let span = node
                .get("hosts")
                .and_then(|m| m.get_key(name))
                .map(|k| k.span)
                .unwrap_or_default();
            if let Err((message, help)) = NameKind::Host.check(name) {
                diags.push(Diagnostic::at(span, message).with_help(help));
            }
            check_host_fields(h, node.get("hosts").and_then(|m| m.get(name)), diags);
            if name == "all" || name == "controller" {
                diags.push(Diagnostic::at(
                    span,
                    format!("`{name}` is reserved and cannot name a host"),
                ));
            }
            hosts.push(merge_host(name, h, &defaults, dir));
        }
        if hosts.is_empty() {
            diags.push(Diagnostic::at(
                node.get_key("hosts").map_or(node.span, |k| k.span),
                "the inventory has no hosts",
            ));
        }
        for h in &hosts {
            for role in &h.roles {
                let span = role_span(node, &h.name, role);
                if let Err((message, help)) = NameKind::Role.check(role) {
                    diags.push(
                        Diagnostic::at(span, format!("{message} on host `{}`", h.name))
                            .with_help(help),
                    );
                } else if role == "all" || role == "controller" {
                    diags.push(Diagnostic::at(
                        span,
                        format!(
                            "`{role}` is reserved and cannot name a role (host `{}`)",
                            h.name
                        ),
                    ));
                }
            }
        }
        (diags.len() == before).then(|| Inventory {
            hosts,
            source: Some(path.to_path_buf()),
            builtin: false,
        })
    }

    /// Every role some host carries, sorted.
    pub fn roles(&self) -> Vec<&str> {
        let mut roles: Vec<&str> = self
            .hosts
            .iter()
            .flat_map(|h| h.roles.iter().map(String::as_str))
            .collect();
        roles.sort_unstable();
        roles.dedup();
        roles
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The hosts carrying `role`, in inventory order.
    pub fn with_role(&self, role: &str) -> Vec<usize> {
        if self.builtin {
            return vec![0];
        }
        (0..self.hosts.len())
            .filter(|&i| self.hosts[i].roles.iter().any(|r| r == role))
            .collect()
    }

    /// Resolves selectors (`all`, a host name, a role) into host indices, in
    /// inventory order, without repeats.
    pub fn select(&self, selectors: &[String]) -> Result<Vec<usize>, UnknownSelector> {
        let mut picked = vec![false; self.hosts.len()];
        for sel in selectors {
            if sel == "all" {
                picked.iter_mut().for_each(|p| *p = true);
            } else if let Some(i) = self.hosts.iter().position(|h| &h.name == sel) {
                picked[i] = true;
            } else {
                let hosts = self.with_role(sel);
                if hosts.is_empty() {
                    return Err(self.unknown(sel));
                }
                hosts.into_iter().for_each(|i| picked[i] = true);
            }
        }
        Ok((0..picked.len()).filter(|&i| picked[i]).collect())
    }

    fn unknown(&self, sel: &str) -> UnknownSelector {
        let roles = self.roles();
        let names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
        let help = did_you_mean(sel, roles.iter().copied().chain(names.iter().copied()));
        let known = if roles.is_empty() {
            "the inventory defines no roles".to_string()
        } else {
            format!("known roles: {}", list_names(roles.iter().copied()))
        };
        UnknownSelector {
            message: format!("unknown role or host `{sel}`"),
            help: Some(match help {
                Some(h) => format!("{h} ({known})"),
                None => format!("{known}; hosts: {}", list_names(names.iter().copied())),
            }),
        }
    }
}

/// Where `role` is written for `host`: the list item, else the list, else
/// the host (a role from `defaults` points at the defaults' list).
fn role_span(node: &Node, host: &str, role: &str) -> Span {
    let list = node
        .get("hosts")
        .and_then(|m| m.get(host))
        .and_then(|h| h.get("roles"))
        .or_else(|| node.get("defaults").and_then(|d| d.get("roles")));
    list.and_then(|l| {
        l.as_seq()
            .unwrap_or_default()
            .iter()
            .find(|item| item.as_str() == Some(role))
            .map(|item| item.span)
            .or(Some(l.span))
    })
    .unwrap_or(node.span)
}

/// The fields of one host (or of `defaults`) that reach ssh's command line
/// must be read by ssh as what they are: never as an option.
fn check_host_fields(h: &RawHost, node: Option<&Node>, diags: &mut Diagnostics) {
    let span = |key: &str| {
        node.and_then(|n| n.get(key))
            .map(|n| n.span)
            .unwrap_or_default()
    };
    let mut check = |field: HostField, value: &str, at: Span| {
        if let Err((message, help)) = field.check(value) {
            diags.push(Diagnostic::new(Some(at), message).with_help(help));
        }
    };
    if let Some(a) = &h.address
        && a != LOCAL
    {
        check(HostField::Address, a, span("address"));
    }
    if let Some(u) = &h.user {
        check(HostField::User, u, span("user"));
    }
    if let Some(j) = &h.jump {
        check(HostField::Jump, j, span("jump"));
    }
    let options = node.and_then(|n| n.get("ssh_options"));
    for key in h.ssh_options.iter().flatten().map(|(k, _)| k) {
        let at = options
            .and_then(|o| o.get_key(key))
            .map_or_else(|| span("ssh_options"), |k| k.span);
        check(HostField::SshOptionKey, key, at);
    }
}

/// `slot[1-N]`: the nodes of an allocation of `n` nodes not granted yet;
/// without `n`, the fewest the inventory's `roles` fit (at least one).
fn planned_nodelist(node: &Node, n: Option<usize>) -> String {
    use crate::slurm::alloc::{Take, assign};
    let n = n.unwrap_or_else(|| {
        let rules: Vec<(String, Take)> = node
            .get("roles")
            .and_then(Node::as_map)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.name.clone(), Take::parse(&v.to_json()).ok()?)))
                    .collect()
            })
            .unwrap_or_default();
        (1..=crate::slurm::MAX_PLANNED_NODES)
            .find(|&n| {
                let nodes: Vec<String> = (1..=n).map(|i| format!("slot{i}")).collect();
                assign(&nodes, &rules).is_ok_and(|roles| roles.iter().all(|r| !r.is_empty()))
            })
            .unwrap_or(1)
    });
    if n <= 1 {
        "slot1".into()
    } else {
        format!("slot[1-{n}]")
    }
}

/// The hosts of an inventory with `provider: slurm`: one per node of the
/// allocation, named as Slurm names it, with the roles its rules give.
fn from_allocation(
    raw: &RawInventory,
    node: &Node,
    path: &Path,
    diags: &mut Diagnostics,
    nodelist: Option<&str>,
    addresses: &dyn Fn(&[String]) -> std::collections::HashMap<String, String>,
) -> Option<Inventory> {
    use crate::slurm::alloc::{Take, assign};
    let at = |key: &str| node.get_key(key).map_or(node.span, |k| k.span);
    let before = diags.len();
    match raw.provider.as_deref() {
        Some("slurm") => {}
        Some(other) => diags.push(
            Diagnostic::at(
                node.get("provider").map_or(node.span, |n| n.span),
                format!("unknown provider `{other}`"),
            )
            .with_help("the one provider is `slurm`: the nodes of the allocation flow runs in"),
        ),
        None => diags.push(
            Diagnostic::at(
                at("roles"),
                "`roles` and `role_vars` belong to an inventory with `provider: slurm`",
            )
            .with_help("add `provider: slurm`, or give each host its roles under `hosts:`"),
        ),
    }
    if !raw.hosts.is_empty() {
        diags.push(
            Diagnostic::at(
                at("hosts"),
                "an inventory with `provider: slurm` takes its hosts from the allocation",
            )
            .with_help("remove `hosts:`; `roles:` says which nodes carry which role"),
        );
    }
    let transport = match raw.transport.as_deref() {
        Some("ssh") => Transport::Ssh,
        None | Some("srun") => Transport::Srun,
        Some(other) => {
            diags.push(
                Diagnostic::at(node.get("transport").map_or(node.span, |n| n.span), format!("unknown transport `{other}`"))
                    .with_help("`srun` (the default): steps run as job steps of the allocation; `ssh`: over ssh, with `defaults` for user, identity and the like"),
            );
            Transport::Ssh
        }
    };
    // Rules in the order written.
    let mut rules: Vec<(String, Take)> = Vec::new();
    match node.get("roles").and_then(Node::as_map) {
        Some(m) if !m.is_empty() => {
            for (k, v) in m.iter() {
                if let Err((message, help)) = NameKind::Role.check(&k.name) {
                    diags.push(Diagnostic::at(k.span, message).with_help(help));
                }
                match Take::parse(&v.to_json()) {
                    Ok(t) => rules.push((k.name.clone(), t)),
                    Err(e) => diags.push(Diagnostic::at(v.span, format!("role `{}`: {e}", k.name))),
                }
            }
        }
        _ => diags.push(
            Diagnostic::at(
                at("provider"),
                "an inventory with `provider: slurm` needs `roles:`",
            )
            .with_help(
                "say which nodes carry which role, like `roles: { coordinator: 1, worker: rest }`",
            ),
        ),
    }
    for role in raw.role_vars.iter().flat_map(|r| r.keys()) {
        if !rules.iter().any(|(r, _)| r == role) {
            diags.push(Diagnostic::at(
                at("role_vars"),
                format!("`role_vars` names role `{role}`, which `roles:` does not"),
            ));
        }
    }
    if diags.len() > before {
        return None;
    }
    let Some(list) = nodelist else {
        diags.push(
            Diagnostic::at(at("provider"), "`provider: slurm`, but flow is not inside a Slurm allocation: `SLURM_JOB_NODELIST` is not set")
                .with_help("run flow inside `salloc`/`sbatch`; to plan outside one, set `SLURM_JOB_NODELIST` to the nodes, like `node[1-3]`"),
        );
        return None;
    };
    let nodes = match crate::slurm::hostlist::expand(list) {
        Ok(n) if !n.is_empty() => n,
        Ok(_) => {
            diags.push(Diagnostic::at(
                at("provider"),
                "`SLURM_JOB_NODELIST` is empty",
            ));
            return None;
        }
        Err(e) => {
            diags.push(Diagnostic::at(
                at("provider"),
                format!("`SLURM_JOB_NODELIST`: {e}"),
            ));
            return None;
        }
    };
    let roles = match assign(&nodes, &rules) {
        Ok(r) => r,
        Err(e) => {
            diags.push(Diagnostic::at(
                at("roles"),
                format!("the allocation `{list}` does not fit: {e}"),
            ));
            return None;
        }
    };
    let defaults = raw.defaults.clone().unwrap_or_default();
    check_host_fields(&defaults, node.get("defaults"), diags);
    // Reached where Slurm reaches them (`NodeAddr`).
    let addrs = addresses(&nodes);
    let hosts = nodes
        .iter()
        .zip(roles)
        .enumerate()
        .map(|(slot, (name, roles))| {
            let mut vars: BTreeMap<String, serde_json::Value> = BTreeMap::new();
            for r in &roles {
                for (k, v) in raw.role_vars.iter().flat_map(|rv| rv.get(r)).flatten() {
                    vars.insert(k.clone(), v.clone());
                }
            }
            vars.insert("slurm_node".into(), serde_json::Value::from(name.clone()));
            let h = RawHost {
                address: addrs.get(name).cloned(),
                roles: Some(roles),
                vars: Some(vars),
                ..RawHost::default()
            };
            let mut host = merge_host(name, &h, &defaults, path.parent().unwrap_or(Path::new(".")));
            host.transport = transport;
            host.slot = Some(slot);
            host
        })
        .collect();
    (diags.len() == before).then(|| Inventory {
        hosts,
        source: Some(path.to_path_buf()),
        builtin: false,
    })
}

fn merge_host(name: &str, h: &RawHost, d: &RawHost, dir: &Path) -> Host {
    let pick = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone());
    let mut vars = serde_json::Map::new();
    for (k, v) in d.vars.iter().flatten().chain(h.vars.iter().flatten()) {
        vars.insert(k.clone(), v.clone());
    }
    let mut ssh_options = d.ssh_options.clone().unwrap_or_default();
    ssh_options.extend(h.ssh_options.clone().unwrap_or_default());
    Host {
        name: name.to_string(),
        address: pick(&h.address, &d.address).unwrap_or_else(|| name.to_string()),
        user: pick(&h.user, &d.user),
        port: h.port.or(d.port),
        jump: pick(&h.jump, &d.jump),
        identity: pick(&h.identity, &d.identity),
        workdir: pick(&h.workdir, &d.workdir),
        roles: h
            .roles
            .clone()
            .or_else(|| d.roles.clone())
            .unwrap_or_default(),
        vars,
        ssh_options,
        ssh_config: pick(&h.ssh_config, &d.ssh_config).map(|p| dir.join(p)),
        transport: Transport::Ssh,
        slot: None,
    }
}

/// The name of an invocation's folder on its hosts: the artifact id and six
/// hex digits of a hash of this machine's id and the artifact's absolute
/// path. Two projects (or two controllers) whose artifacts got the same id
/// in the same second still get folders of their own.
pub fn invocation_folder(artifact_dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let abs = crate::paths::absolute(artifact_dir);
    let id = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "artifact".into());
    let mut h = Sha256::new();
    h.update(crate::machine::machine_id().as_bytes());
    h.update([0]);
    h.update(abs.as_os_str().as_encoded_bytes());
    let d = h.finalize();
    let hex: String = d.iter().take(3).map(|b| format!("{b:02x}")).collect();
    format!("{id}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::parse;

    fn inv(yaml: &str) -> Inventory {
        let node = parse(yaml, 0).expect("parses");
        let mut d = Diagnostics::new();
        let inv = Inventory::from_node(&node, Path::new("hosts/x.yaml"), &mut d, None);
        assert!(d.is_empty(), "{d:?}");
        inv.expect("valid")
    }

    fn alloc(yaml: &str, nodelist: Option<&str>) -> Result<Inventory, String> {
        let node = parse(yaml, 0).expect("parses");
        let mut d = Diagnostics::new();
        let addrs = |nodes: &[String]| {
            nodes
                .iter()
                .filter(|n| n.as_str() == "c09")
                .map(|n| (n.clone(), "10.0.0.9".to_string()))
                .collect()
        };
        let inv =
            Inventory::from_node_with(&node, Path::new("hosts/s.yaml"), &mut d, nodelist, &addrs);
        match inv {
            Some(i) if d.is_empty() => Ok(i),
            _ => Err(d
                .iter()
                .map(|x| x.message.clone())
                .collect::<Vec<_>>()
                .join("\n")),
        }
    }

    #[test]
    fn an_allocation_becomes_hosts_with_roles_by_rule() {
        let yaml = "provider: slurm\ntransport: ssh\ndefaults: { user: root, workdir: /scratch/flow }\nroles:\n  coordinator: 1\n  worker: rest\nrole_vars:\n  worker: { port: 9001 }\n";
        let i = alloc(yaml, Some("c[08-10]")).expect("valid");
        let names: Vec<&str> = i.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["c08", "c09", "c10"]);
        assert_eq!(i.hosts[0].roles, ["coordinator"]);
        assert_eq!(i.hosts[2].roles, ["worker"]);
        // Where Slurm reaches it, else by its name.
        assert_eq!(i.hosts[1].address, "10.0.0.9");
        assert_eq!(i.hosts[2].address, "c10");
        assert_eq!(i.hosts[1].user.as_deref(), Some("root"));
        assert_eq!(i.hosts[1].vars["port"], 9001);
        assert_eq!(i.hosts[0].vars["slurm_node"], "c08");
        assert!(i.hosts[0].vars.get("port").is_none());

        let e = alloc(yaml, None).expect_err("outside an allocation");
        assert!(e.contains("not inside a Slurm allocation"), "{e}");
        let e = alloc(yaml, Some("c1")).expect_err("too small");
        assert!(e.contains("no node is left for role `worker`"), "{e}");
        let e = alloc(yaml, Some("c[1-")).expect_err("bad list");
        assert!(e.contains("`[` without `]`"), "{e}");
        let e = alloc(
            "provider: slurm\nroles: { a: 1 }\nhosts: { x: {} }\n",
            Some("n1"),
        )
        .expect_err("hosts too");
        assert!(e.contains("takes its hosts from the allocation"), "{e}");
        let e = alloc("provider: pbs\nroles: { a: some }\n", Some("n1")).expect_err("bad");
        assert!(e.contains("unknown provider `pbs`"), "{e}");
        assert!(e.contains("is not a node rule"), "{e}");
    }

    #[test]
    fn defaults_apply_and_hosts_keep_file_order() {
        let i = inv(
            "defaults: {user: jc, workdir: ~/flow, vars: {a: 1}}\nhosts:\n  z: {address: z1, roles: [worker], vars: {b: 2}}\n  a: {address: a1, roles: [worker, coordinator], user: root}\n",
        );
        assert_eq!(i.hosts[0].name, "z");
        assert_eq!(i.hosts[0].user.as_deref(), Some("jc"));
        assert_eq!(i.hosts[1].user.as_deref(), Some("root"));
        assert_eq!(i.hosts[0].vars.len(), 2);
        assert_eq!(i.select(&["worker".into()]), Ok(vec![0, 1]));
        assert_eq!(
            i.select(&["coordinator".into(), "z".into()]),
            Ok(vec![0, 1])
        );
        assert_eq!(i.select(&["all".into()]), Ok(vec![0, 1]));
    }

    #[test]
    fn unknown_roles_name_the_known_ones() {
        let i = inv("hosts:\n  a: {address: a1, roles: [worker]}\n");
        let e = i.select(&["wroker".into()]).expect_err("unknown");
        assert_eq!(e.message, "unknown role or host `wroker`");
        assert_eq!(
            e.help.as_deref(),
            Some("did you mean `worker`? (known roles: `worker`)")
        );
    }

    #[test]
    fn builtin_local_carries_every_role() {
        let i = Inventory::builtin();
        assert_eq!(i.select(&["anything".into()]), Ok(vec![0]));
        assert_eq!(i.hosts[0].template_address(), "localhost");
    }
}
