//! Child processes of a test: the test binary runs itself again as a service, a consumer or a
//! subscriber, selected by the name of a `#[test]` function (`--exact`) and an environment
//! variable that only the child has. The parent signals it, kills it and reads what it wrote in
//! a directory of its own. Everything is killed, reaped and removed on drop, whatever happened.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

/// In the child, the `n` comma-separated fields of `env` (the last one keeps any further
/// commas); `None` in the parent, where the child's `#[test]` function returns at once.
pub fn child_fields(env: &str, n: usize) -> Option<Vec<String>> {
    let spec = std::env::var(env).ok()?;
    let fields: Vec<String> = spec.splitn(n, ',').map(str::to_owned).collect();
    assert_eq!(fields.len(), n, "{env} must have {n} fields, not {spec:?}");
    Some(fields)
}

/// A child still running after this (its parent died without killing it) exits by itself.
const CHILD_LIFETIME: Duration = Duration::from_secs(120);

/// Runs the child's `body` on a two-thread runtime. A child still running after
/// [`CHILD_LIFETIME`] exits with status 3.
pub fn run_child(body: impl Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime for the child");
    runtime.block_on(async {
        tokio::select! {
            () = body => {}
            () = tokio::time::sleep(CHILD_LIFETIME) => std::process::exit(3),
        }
    });
}

/// A directory for a test's child processes, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `<tmp>/eventbus-<test>-<namespace>`, created.
    pub fn new(test: &str, ns: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("eventbus-{test}-{ns}"));
        std::fs::create_dir_all(&dir).expect("the children's directory");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running child process, killed and reaped on drop.
pub struct ChildProcess {
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
}

impl ChildProcess {
    /// Starts the `#[test]` function `test` of this binary with `env` set to `spec` and the
    /// extra variables `envs`; its output goes to the file `log`.
    pub fn spawn(
        test: &str,
        env: &str,
        spec: String,
        envs: &[(&str, &str)],
        log: PathBuf,
    ) -> ChildProcess {
        let out = std::fs::File::create(&log).expect("the child's log file");
        let err = out.try_clone().expect("the child's log file, twice");
        let exe = std::env::current_exe().expect("the test binary's path");
        let child = Command::new(exe)
            .args([test, "--exact", "--nocapture", "--test-threads", "1"])
            .env(env, spec)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("the child process starts");
        ChildProcess {
            pid: child.id(),
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// What the child printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` (`-STOP`, `-CONT`, `-TERM`, `-INT`) with `kill`.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid.to_string();
        let sent = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "kill {signal} {pid} failed");
    }

    /// Fails the test, with the child's output, when the child exited on its own.
    pub fn assert_alive(&mut self) {
        if let Some(status) = self.try_wait() {
            panic!(
                "the child exited by itself ({status}); its output:\n{}",
                self.log()
            );
        }
    }

    /// The exit status once the child exited (it is reaped then).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let status = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().expect("wait for the child"));
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// Waits for the exit (after a signal that ends it).
    pub fn wait(&mut self) -> ExitStatus {
        self.child
            .take()
            .expect("waited for once")
            .wait()
            .expect("reap the child")
    }

    /// SIGKILL, then reap it.
    pub fn kill(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("killed once");
        child.kill().expect("SIGKILL the child");
        child.wait().expect("reap the child")
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
