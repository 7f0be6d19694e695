//! What a real node changes on the machine outside its own directory, and putting it back: the
//! node's address on `lo`, the pod bridge and the route of the Service range into it, the kernel
//! settings kubelet and the bridge plugin write, the iptables rules kube-proxy, kubelet and the
//! NetworkPolicy enforcer add, the enforcer's ipsets, any nftables table made meanwhile, the
//! cgroups kubelet creates, and the few paths kubelet and containerd hard-code.
//!
//! [`HostState::read`] is what a test compares before and after a node's life.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use super::config::{BRIDGE, BRIDGE_ADDRESS, NODE_IP, SERVICE_CIDR};

/// Kernel settings kubelet sets for itself (`protectKernelDefaults: false`), the bridge plugin
/// (`ip_forward`) and the NetworkPolicy enforcer's node (bridged traffic through iptables): saved
/// before, written back after.
const SYSCTLS: [&str; 9] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    BRIDGE_NETFILTER,
];

/// Whether traffic between pods on the bridge passes iptables, where an enforcer filters it.
pub const BRIDGE_NETFILTER: &str = "net/bridge/bridge-nf-call-iptables";

/// Paths kubelet and containerd use whatever they are told: removed after when they were not
/// there before.
const HARD_CODED_PATHS: [&str; 5] =
    ["/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/run/containerd", "/run/netns"];

/// The iptables tables kube-proxy and kubelet write.
const TABLES: [&str; 4] = ["filter", "nat", "mangle", "raw"];

/// The machine's state as far as a node touches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostState {
    pub addresses: Vec<String>,
    pub links: Vec<String>,
    pub routes: Vec<String>,
    pub sysctls: BTreeMap<String, String>,
    pub iptables: String,
    pub ip6tables: String,
    pub nft_tables: Vec<String>,
    pub ipsets: Vec<String>,
    pub paths: BTreeMap<String, bool>,
    pub cgroups: Vec<String>,
    pub mounts: Vec<String>,
}

fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(program).args(args).output().with_context(|| format!("cannot run {program}"))?;
    if !output.status.success() {
        bail!("{program} {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8(output.stdout)?)
}

/// `iptables-save`'s rules without its timestamped comments and packet counters.
fn rules(program: &str) -> anyhow::Result<String> {
    let dump = run(program, &[])?;
    Ok(dump
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| match line.strip_prefix(':') {
            // ":CHAIN POLICY [packets:bytes]": the counters change with any traffic.
            Some(chain) => format!(":{}", chain.rsplit_once(' ').map_or(chain, |(head, _)| head)),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

/// `nft list tables`: one "table <family> <name>" per line, sorted.
fn nft_tables() -> anyhow::Result<Vec<String>> {
    let mut tables: Vec<String> = run("nft", &["list", "tables"])?.lines().map(str::to_owned).collect();
    tables.sort();
    Ok(tables)
}

/// Sets a kernel setting of [`SYSCTLS`] to 1 (the node puts it back when it stops).
pub fn enable(key: &str) -> anyhow::Result<()> {
    fs::write(Path::new("/proc/sys").join(key), "1").with_context(|| format!("cannot set {key}"))
}

/// `ipset list -n`: the names of the IP sets, sorted.
fn ipsets() -> anyhow::Result<Vec<String>> {
    let mut sets: Vec<String> = run("ipset", &["list", "-n"])?.lines().map(str::to_owned).collect();
    sets.sort();
    Ok(sets)
}

/// Names of the cgroups kubelet makes (`kubepods*`), in every hierarchy.
fn kubelet_cgroups() -> Vec<String> {
    let mut found = Vec::new();
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else { return found };
    for hierarchy in hierarchies.flatten() {
        let Ok(children) = fs::read_dir(hierarchy.path()) else { continue };
        for child in children.flatten() {
            let name = child.file_name().to_string_lossy().into_owned();
            if name.starts_with("kubepods") && child.path().is_dir() {
                found.push(child.path().display().to_string());
            }
        }
    }
    found.sort();
    found
}

impl HostState {
    pub fn read() -> anyhow::Result<Self> {
        let without_index = |output: String| -> Vec<String> {
            // "4: eth0 ...": interface indexes grow with every link made and deleted.
            let mut lines: Vec<String> = output
                .lines()
                .map(|line| line.split_once(": ").map_or(line, |(_, rest)| rest).to_owned())
                .map(|line| line.split(" link/").next().unwrap_or_default().to_owned())
                .collect();
            lines.sort();
            lines
        };
        let links = without_index(run("ip", &["-o", "link", "show"])?)
            .into_iter()
            .map(|line| line.split(':').next().unwrap_or_default().to_owned())
            .collect();
        let mut routes: Vec<String> =
            run("ip", &["route", "show", "table", "all"])?.lines().map(str::to_owned).collect();
        routes.sort();
        let sysctls = SYSCTLS
            .iter()
            .map(|key| {
                let value = fs::read_to_string(Path::new("/proc/sys").join(key)).unwrap_or_default();
                ((*key).to_owned(), value.trim().to_owned())
            })
            .collect();
        let paths = HARD_CODED_PATHS.iter().map(|path| ((*path).to_owned(), Path::new(path).exists())).collect();
        let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mounts")?.lines().map(str::to_owned).collect();
        mounts.sort();
        Ok(Self {
            addresses: without_index(run("ip", &["-o", "addr", "show"])?),
            links,
            routes,
            sysctls,
            iptables: rules("iptables-save")?,
            ip6tables: rules("ip6tables-save")?,
            nft_tables: nft_tables()?,
            ipsets: ipsets()?,
            paths,
            cgroups: kubelet_cgroups(),
            mounts,
        })
    }
}

/// What [`Host::prepare`] saved, to put the machine back in [`Host::restore`].
#[derive(Debug)]
pub struct Host {
    sysctls: Vec<(String, String)>,
    iptables: String,
    ip6tables: String,
    nft_tables: Vec<String>,
    ipsets: Vec<String>,
    absent_paths: Vec<PathBuf>,
    netns_before: Vec<String>,
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args).map(drop)
}

/// A full `iptables-restore` input: every table of [`TABLES`], with the saved rules where there
/// were some and empty otherwise, so chains added since are flushed and deleted.
fn restore_input(saved: &str) -> String {
    let mut input = String::new();
    for table in TABLES {
        let header = format!("*{table}");
        let section: Vec<&str> =
            saved.lines().skip_while(|line| *line != header).take_while(|line| *line != "COMMIT").collect();
        if section.is_empty() {
            input.push_str(&format!("{header}\nCOMMIT\n"));
        } else {
            input.push_str(&section.join("\n"));
            input.push_str("\nCOMMIT\n");
        }
    }
    input
}

fn netns_entries() -> Vec<String> {
    fs::read_dir("/run/netns")
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

impl Host {
    /// Saves what the node will change, then adds the node's address to `lo`, the pod bridge, and
    /// the route of the Service range into the bridge (traffic to a ClusterIP that nothing
    /// translates fails here instead of following the default route out).
    pub fn prepare() -> anyhow::Result<Self> {
        // A node whose test process was killed left its address and bridge: they are this
        // module's by name, and would fail every later start.
        let _ = ip(&["link", "delete", BRIDGE]);
        let _ = ip(&["addr", "delete", &format!("{NODE_IP}/32"), "dev", "lo"]);
        let sysctls = SYSCTLS
            .iter()
            .filter_map(|key| {
                let value = fs::read_to_string(Path::new("/proc/sys").join(key)).ok()?;
                Some(((*key).to_owned(), value.trim().to_owned()))
            })
            .collect();
        let host = Self {
            sysctls,
            iptables: run("iptables-save", &[])?,
            ip6tables: run("ip6tables-save", &[])?,
            nft_tables: nft_tables()?,
            ipsets: ipsets()?,
            absent_paths: HARD_CODED_PATHS.iter().map(PathBuf::from).filter(|path| !path.exists()).collect(),
            netns_before: netns_entries(),
        };
        let address = format!("{NODE_IP}/32");
        let changed = ip(&["addr", "add", &address, "dev", "lo"])
            .and_then(|()| ip(&["link", "add", BRIDGE, "type", "bridge"]))
            .and_then(|()| ip(&["addr", "add", BRIDGE_ADDRESS, "dev", BRIDGE]))
            .and_then(|()| ip(&["link", "set", BRIDGE, "up"]))
            .and_then(|()| ip(&["route", "add", SERVICE_CIDR, "dev", BRIDGE]));
        if let Err(error) = changed {
            // Whatever was added goes again before the error is returned.
            let _ = host.restore();
            return Err(error.context("cannot give the node its address, bridge and route"));
        }
        Ok(host)
    }

    /// Puts back everything [`prepare`](Self::prepare) saved. Best effort: each step runs even when
    /// one before it failed; the failures are returned together.
    pub fn restore(&self) -> anyhow::Result<()> {
        let mut failures = Vec::new();
        let mut step = |what: &str, result: anyhow::Result<()>| {
            if let Err(error) = result {
                failures.push(format!("{what}: {error:#}"));
            }
        };
        // Sandboxes whose network the CNI plugin could not delete: their namespaces go, and their
        // veths with them.
        for name in netns_entries() {
            if name.starts_with("cni-") && !self.netns_before.contains(&name) {
                step("delete a network namespace", ip(&["netns", "delete", &name]));
            }
        }
        step("delete the pod bridge", ip(&["link", "delete", BRIDGE]));
        step("remove the node address", ip(&["addr", "delete", &format!("{NODE_IP}/32"), "dev", "lo"]));
        step("restore iptables", restore_rules("iptables-restore", &self.iptables));
        step("restore ip6tables", restore_rules("ip6tables-restore", &self.ip6tables));
        // A table made while the node ran (by a privileged pod on the host's network, say).
        match nft_tables() {
            Ok(tables) => {
                for table in tables.iter().filter(|table| !self.nft_tables.contains(table)) {
                    let words: Vec<&str> = table.split_whitespace().collect();
                    if let ["table", family, name] = words.as_slice() {
                        step("delete an nftables table", run("nft", &["delete", "table", family, name]).map(drop));
                    }
                }
            }
            Err(error) => step("list nftables tables", Err(error)),
        }
        // After iptables: a set still named by a rule cannot be destroyed.
        match ipsets() {
            Ok(sets) => {
                for set in sets.iter().filter(|set| !self.ipsets.contains(set)) {
                    step("destroy an ipset", run("ipset", &["destroy", set]).map(drop));
                }
            }
            Err(error) => step("list ipsets", Err(error)),
        }
        for (key, value) in &self.sysctls {
            step("restore a kernel setting", fs::write(Path::new("/proc/sys").join(key), value).map_err(Into::into));
        }
        for cgroup in kubelet_cgroups() {
            step("remove kubelet's cgroups", remove_cgroup(Path::new(&cgroup)));
        }
        for path in &self.absent_paths {
            step("remove a path kubelet or containerd made", remove_tree(path));
        }
        if failures.is_empty() { Ok(()) } else { bail!("the host is not fully restored:\n{}", failures.join("\n")) }
    }
}

fn restore_rules(program: &str, saved: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = Command::new(program)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    child.stdin.take().context("no stdin")?.write_all(restore_input(saved).as_bytes())?;
    let output = child.wait_with_output()?;
    if !output.status.success() {
        bail!("{program} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// Removes a cgroup directory: its children first (a cgroup is removed with `rmdir`, never its
/// files).
fn remove_cgroup(path: &Path) -> anyhow::Result<()> {
    for child in fs::read_dir(path)?.flatten() {
        if child.file_type()?.is_dir() {
            remove_cgroup(&child.path())?;
        }
    }
    fs::remove_dir(path).with_context(|| format!("cannot remove cgroup {}", path.display()))
}

/// Removes a directory tree a node made, unmounting what is still mounted inside it first.
pub fn remove_tree(path: &Path) -> anyhow::Result<()> {
    if !path.exists() {
        return Ok(());
    }
    unmount_under(path)?;
    fs::remove_dir_all(path).with_context(|| format!("cannot remove {}", path.display()))
}

/// Unmounts every mount at or below `path`, deepest first.
pub fn unmount_under(path: &Path) -> anyhow::Result<()> {
    let mounts = fs::read_to_string("/proc/self/mounts")?;
    let prefix = path.display().to_string();
    let mut targets: Vec<&str> = mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(1))
        .filter(|target| *target == prefix || target.starts_with(&format!("{prefix}/")))
        .collect();
    targets.sort_by_key(|target| std::cmp::Reverse(target.len()));
    for target in targets {
        let c_target = std::ffi::CString::new(target)?;
        // SAFETY: a valid NUL-terminated path; MNT_DETACH never blocks on busy mounts.
        if unsafe { libc::umount2(c_target.as_ptr(), libc::MNT_DETACH) } != 0 {
            bail!("cannot unmount {target}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_input_names_every_table_and_keeps_the_saved_rules() {
        let saved = "# comment\n*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n";
        let input = restore_input(saved);
        assert!(input.contains("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n"));
        for table in ["*nat\nCOMMIT", "*mangle\nCOMMIT", "*raw\nCOMMIT"] {
            assert!(input.contains(table), "{table} missing from {input}");
        }
    }
}
