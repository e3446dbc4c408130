//! Test support: hosts with addresses of their own. Each host is a network
//! namespace joined to a private bridge by a veth pair, with its own
//! address on a private /24 and its own sshd on port 22, so two hosts can
//! listen on the same port and one can drop off the network (its link
//! downed). Each host has its own pid namespace and /proc as well. Needs
//! root; the namespaces, links and every process started inside them are
//! removed on drop.
//!
//! The hosts share the machine's file system, so each gets its own workdir.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct NsHosts {
    pub dir: tempfile::TempDir,
    pub hosts: Vec<NsHost>,
    bridge: String,
}

pub struct NsHost {
    pub name: String,
    pub address: String,
    ns: String,
    veth: String,
    sshd: Option<Child>,
}

/// Network namespaces need root. Tests that use them are `#[ignore]`d, so
/// a run that is not root skips them visibly; one that asks for them anyway
/// (`--ignored`) fails here, saying why, rather than passing.
pub fn require_root() {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false);
    assert!(
        root,
        "network-namespace hosts need root: run scripts/test.sh as root"
    );
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("ip runs (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NsHost {
    /// The network namespace's name (`ip netns exec NAME …`).
    pub fn ns_name(&self) -> String {
        self.ns.clone()
    }
}

impl NsHosts {
    /// Starts hosts with the given names, each in its own namespace.
    pub fn start(names: &[&str]) -> NsHosts {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server"
        );
        // Unique within this process and, by the pid, across test binaries.
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{:x}{n}", pid % 0xffff);
        let net = format!("10.{}.{}", 100 + (pid % 100), 10 + (n % 240));
        let bridge = format!("fb{tag}");
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_path_buf();
        let _ = std::fs::create_dir_all("/run/sshd");
        keygen(&d.join("id"));
        std::fs::copy(d.join("id.pub"), d.join("authorized_keys")).expect("authorized_keys");

        let mut me = NsHosts {
            dir,
            hosts: Vec::new(),
            bridge: bridge.clone(),
        };
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{net}.1/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        for (i, name) in names.iter().enumerate() {
            let ns = format!("flow{tag}h{i}");
            let veth = format!("fv{tag}h{i}");
            let address = format!("{net}.{}", i + 2);
            ip(&["netns", "add", &ns]);
            // Owned from here on, so a failure below still cleans it up.
            me.hosts.push(NsHost {
                name: name.to_string(),
                address: address.clone(),
                ns: ns.clone(),
                veth: veth.clone(),
                sshd: None,
            });
            ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            ip(&["link", "set", &veth, "master", &bridge]);
            ip(&["link", "set", &veth, "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            let hd = d.join(name);
            std::fs::create_dir_all(hd.join("work")).expect("mkdir");
            keygen(&hd.join("hostkey"));
            let conf = format!(
                "Port 22\nListenAddress {address}\nHostKey {hk}\nAuthorizedKeysFile {ak}\nPidFile {pid}\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nMaxSessions 32\nMaxStartups 100\nLogLevel ERROR\n",
                hk = hd.join("hostkey").display(),
                ak = d.join("authorized_keys").display(),
                pid = hd.join("sshd.pid").display(),
            );
            std::fs::write(hd.join("sshd_config"), conf).expect("sshd_config");
            // Its own pid namespace and /proc too, so that a host sees (and
            // reaps) only its own processes, as a separate machine would.
            // Killing `unshare` kills sshd, the namespace's init, and with
            // it everything the host started.
            let child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns,
                    "unshare",
                    "--pid",
                    "--fork",
                    "--kill-child",
                    "--mount-proc",
                ])
                .args([SSHD, "-D", "-e", "-f"])
                .arg(hd.join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(hd.join("sshd.log")).expect("log"))
                .spawn()
                .expect("sshd starts");
            me.hosts[i].sshd = Some(child);
        }
        for h in &me.hosts {
            wait_listening(&h.address);
        }
        me
    }

    pub fn workdir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name).join("work")
    }

    /// An inventory of every host by address (port 22, root, the temp key),
    /// with its own workdir; `extra` per host is added to its YAML flow map.
    pub fn inventory(&self, path: &Path, extra: &[&str]) {
        let mut text = format!(
            "defaults:\n  user: root\n  identity: {}\n  \
             ssh_options: {{ StrictHostKeyChecking: \"no\", UserKnownHostsFile: /dev/null, LogLevel: ERROR }}\nhosts:\n",
            self.dir.path().join("id").display()
        );
        for (i, h) in self.hosts.iter().enumerate() {
            text.push_str(&format!(
                "  {}: {{ address: {}, workdir: {}, {} }}\n",
                h.name,
                h.address,
                self.workdir(&h.name).display(),
                extra.get(i).copied().unwrap_or("")
            ));
        }
        std::fs::write(path, text).expect("inventory");
    }

    /// The host drops off the network: its link goes down, so its
    /// connections hang rather than close (no RST, no FIN).
    pub fn link_down(&self, name: &str) {
        if let Some(h) = self.hosts.iter().find(|h| h.name == name) {
            ip(&["link", "set", &h.veth, "down"]);
        }
    }

    /// Brings the host's link back, and returns once its sshd accepts a
    /// connection again (the bridge's port needs a moment to forward).
    pub fn link_up(&self, name: &str) {
        let Some(h) = self.hosts.iter().find(|h| h.name == name) else {
            return;
        };
        ip(&["link", "set", &h.veth, "up"]);
        let addr: std::net::SocketAddr = format!("{}:22", h.address).parse().expect("address");
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(500))
            .is_err()
        {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(20),
                "host `{name}` unreachable 20 s after its link came back"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// Pids of the processes in a host's namespace whose command line
    /// contains `needle` (sshd excluded).
    pub fn processes(&self, name: &str, needle: &str) -> Vec<i32> {
        let Some(h) = self.hosts.iter().find(|h| h.name == name) else {
            return Vec::new();
        };
        ns_pids(&h.ns)
            .into_iter()
            .filter(|p| {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                cmd.contains(needle) && !cmd.contains("sshd")
            })
            .collect()
    }
}

impl Drop for NsHosts {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            if let Some(mut c) = h.sshd.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
            // Whatever the tests started in the namespace.
            for p in ns_pids(&h.ns) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = Command::new("ip").args(["netns", "del", &h.ns]).output();
            let _ = Command::new("ip").args(["link", "del", &h.veth]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}

fn ns_pids(ns: &str) -> Vec<i32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen runs");
    assert!(out.status.success(), "ssh-keygen failed");
}

fn wait_listening(address: &str) {
    let t0 = Instant::now();
    while std::net::TcpStream::connect_timeout(
        &format!("{address}:22").parse().expect("socket address"),
        Duration::from_millis(200),
    )
    .is_err()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "sshd on {address}:22 did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
