//! Starting and finding the pieces of a test environment: the pinned upstream builds of `tools/`,
//! free loopback ports, processes that log to a file and die with the test, private files.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context as _, bail};

/// The repository root: the nearest directory holding `tools/build.sh`, searched upwards from the
/// package cargo is running (or the current directory). Found at run time, because a build cached
/// outside the clone may have been compiled in another checkout.
pub fn repo_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| PathBuf::from("."));
    start
        .ancestors()
        .find(|dir| dir.join("tools/build.sh").is_file())
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."), Path::to_path_buf)
}

/// Directory of a pinned upstream build: `$<env_var>` when set (the Makefile sets it), else
/// `tools/build.sh <component>`, which builds once into the cache and prints the directory.
pub(crate) fn tool_dir(component: &str, env_var: &str) -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var(env_var) {
        return Ok(PathBuf::from(dir));
    }
    let output = Command::new(repo_root().join("tools/build.sh"))
        .arg(component)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run tools/build.sh {component}"))?;
    if !output.status.success() {
        bail!("tools/build.sh {component} failed");
    }
    Ok(PathBuf::from(String::from_utf8(output.stdout)?.trim()))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let span = u32::from(FREE_PORTS.end - FREE_PORTS.start);
    // Processes start at different places, threads of one process take turns.
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..span {
        let offset = start.wrapping_add(NEXT_PORT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = FREE_PORTS.start + u16::try_from(offset)?;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free loopback port in {FREE_PORTS:?}")
}

/// Ports handed out below the kernel's ephemeral range (32768 and up by default): a port chosen
/// there could be taken by an outgoing connection before the process it is meant for binds it.
const FREE_PORTS: std::ops::Range<u16> = 20000..32768;
static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

/// Makes the kernel kill the process `command` starts when the thread that spawns it dies, so a
/// crashed or killed test or benchmark never leaves a process behind (Linux; elsewhere a no-op).
pub fn dies_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
}

pub(crate) fn spawn(name: &str, program: &Path, args: &[String], dir: &Path) -> anyhow::Result<Child> {
    let mut command = Command::new(program);
    command.args(args);
    spawn_command(name, command, dir)
}

/// Starts `command` (its environment and arguments set) with its output in `<dir>/<name>.log`,
/// [dying with its parent](dies_with_parent).
pub(crate) fn spawn_command(name: &str, mut command: Command, dir: &Path) -> anyhow::Result<Child> {
    let path = dir.join(format!("{name}.log"));
    // Appended to: a restarted process keeps the log of its earlier run.
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    dies_with_parent(&mut command);
    command.spawn().with_context(|| format!("cannot start {name} ({})", command.get_program().to_string_lossy()))
}

/// The last `lines` lines of the log at `path` (empty when it cannot be read), for errors about a
/// process that exited.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let log = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Keeps a temporary working directory when the current thread is panicking: a failing test keeps
/// every log for the post-mortem.
pub(crate) fn keep_if_panicking(temp: &mut Option<tempfile::TempDir>) {
    if std::thread::panicking()
        && let Some(temp) = temp.take()
    {
        eprintln!("testenv: logs of the failed test kept in {}", temp.keep().display());
    }
}

/// Writes `content` to the file at `path` (created or truncated) readable by its owner only: it
/// holds a token or a key.
pub fn write_private(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(content).with_context(|| format!("cannot write {}", path.display()))
}
