//! Test support: private sshd instances on loopback, each with its own temp
//! host key and port, all accepting one temp client key, plus the
//! `ssh_config` and inventory that reach them. Works as root or not (sshd
//! then only lets in the user it runs as). Everything is killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where sshd lives on Debian; `scripts/test.sh` installs it (openssh-server).
const SSHD: &str = "/usr/sbin/sshd";

pub struct Sshds {
    pub dir: tempfile::TempDir,
    pub hosts: Vec<SshHost>,
}

pub struct SshHost {
    pub name: String,
    pub port: u16,
    child: Option<Child>,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Sshds {
    /// Starts `n` sshd instances named `h1` … `hn`.
    pub fn start(n: usize) -> Sshds {
        Sshds::start_hiding(n, &[])
    }

    /// [`Sshds::start`] with hosts whose sessions do not find the `hidden`
    /// programs on their PATH (a host without rsync, say): the PATH is a
    /// folder of links to everything else in /usr/bin and /bin.
    pub fn start_hiding(n: usize, hidden: &[&str]) -> Sshds {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing: install openssh-server (`scripts/test.sh` does as root)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(d.join("id")));
        std::fs::copy(d.join("id.pub"), d.join("authorized_keys")).expect("authorized_keys");
        if whoami() == "root" {
            // sshd refuses to start as root without its privilege separation dir.
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let user = whoami();
        let mut set_path = String::new();
        if !hidden.is_empty() {
            let bin = d.join("bin");
            std::fs::create_dir_all(&bin).expect("mkdir");
            for dir in ["/usr/local/bin", "/usr/bin", "/bin"] {
                for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                    let name = e.file_name();
                    let link = bin.join(&name);
                    if !hidden.iter().any(|h| name == *h) && !link.exists() {
                        let _ = std::os::unix::fs::symlink(e.path(), link);
                    }
                }
            }
            set_path = format!("SetEnv PATH={}\n", bin.display());
        }
        let mut config = String::new();
        let mut hosts = Vec::new();
        for i in 1..=n {
            let name = format!("h{i}");
            let port = super::free_port();
            let hd = d.join(&name);
            std::fs::create_dir_all(&hd).expect("mkdir");
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(hd.join("hostkey")));
            let conf = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\nPidFile {pid}\n\
                 StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\nMaxSessions 32\nMaxStartups 100\nLogLevel ERROR\n\
                 AllowTcpForwarding yes\n{set_path}",
                hk = hd.join("hostkey").display(),
                ak = d.join("authorized_keys").display(),
                pid = hd.join("sshd.pid").display(),
            );
            std::fs::write(hd.join("sshd_config"), conf).expect("sshd_config");
            let child = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(hd.join("sshd_config"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(hd.join("sshd.log")).expect("log"))
                .spawn()
                .expect("sshd starts");
            config.push_str(&format!(
                "Host {name}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  IdentityFile {id}\n  IdentitiesOnly yes\n  \
                 StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n",
                id = d.join("id").display(),
            ));
            hosts.push(SshHost {
                name,
                port,
                child: Some(child),
            });
        }
        std::fs::write(d.join("ssh_config"), config).expect("ssh_config");
        let s = Sshds { dir, hosts };
        for h in &s.hosts {
            wait_listening(h.port);
        }
        s
    }

    pub fn ssh_config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    /// An inventory of every host (`address` = its ssh config alias), the
    /// roles given per host in order, written to `path`. Each host works in
    /// a workdir of its own under this set's temp dir: the hosts share this
    /// machine's file system, and tests that run at once must not share a
    /// workdir (flow takes a workdir for one flow at a time).
    pub fn inventory(&self, path: &Path, roles: &[&[&str]]) {
        let mut text = format!(
            "defaults:\n  ssh_config: {}\nhosts:\n",
            self.ssh_config().display()
        );
        for (i, h) in self.hosts.iter().enumerate() {
            let r = roles.get(i).copied().unwrap_or(&[]);
            text.push_str(&format!(
                "  {}: {{ address: {}, roles: [{}], workdir: {} }}\n",
                h.name,
                h.name,
                r.join(", "),
                self.dir.path().join(format!("work-{}", h.name)).display()
            ));
        }
        std::fs::write(path, text).expect("inventory");
    }

    /// The host disappears: its sshd and every connection it serves are
    /// killed (the processes it started keep running, as on a host that
    /// dropped off the network).
    pub fn vanish(&mut self, name: &str) {
        let Some(h) = self.hosts.iter_mut().find(|h| h.name == name) else {
            return;
        };
        let Some(mut c) = h.child.take() else { return };
        let root = c.id() as i32;
        // Every descendant of the listener: the per-connection sshd processes.
        let mut doomed = vec![root];
        loop {
            let before = doomed.len();
            for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    continue;
                };
                let after = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
                let ppid: i32 = after
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if doomed.contains(&ppid)
                    && !doomed.contains(&pid)
                    && comm.trim().starts_with("sshd")
                {
                    doomed.push(pid);
                }
            }
            if doomed.len() == before {
                break;
            }
        }
        for pid in doomed.iter().rev() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = c.wait();
    }

    /// Stops one host's sshd (its existing connections die with it).
    pub fn stop(&mut self, name: &str) {
        if let Some(h) = self.hosts.iter_mut().find(|h| h.name == name)
            && let Some(mut c) = h.child.take()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sshds {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            if let Some(mut c) = h.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().expect("id");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_listening(port: u16) {
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "sshd on port {port} did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Sshds {
    /// An inventory whose hosts are reached by address, port, user and
    /// identity (no ssh config), each with its own workdir (they share a
    /// file system), roles and vars given per host as YAML flow maps.
    pub fn inventory_direct(&self, path: &Path, hosts: &[(&str, &str)]) {
        let d = self.dir.path();
        let mut text = format!(
            "defaults:\n  address: 127.0.0.1\n  user: {}\n  identity: {}\n  \
             ssh_options: {{ StrictHostKeyChecking: \"no\", UserKnownHostsFile: /dev/null, LogLevel: ERROR }}\nhosts:\n",
            whoami(),
            d.join("id").display()
        );
        for (i, (name, extra)) in hosts.iter().enumerate() {
            let h = &self.hosts[i];
            text.push_str(&format!(
                "  {name}: {{ port: {}, workdir: {}, {extra} }}\n",
                h.port,
                d.join(format!("work-{name}")).display()
            ));
        }
        std::fs::write(path, text).expect("inventory");
    }
}
