//! One program run as a child process with exactly the environment it is
//! given (and `PATH`), which its owner may stop, kill, signal and start
//! again with the same command. It knows nothing of what the program is:
//! the services' builder runs them with it, and the tests run whatever else
//! they need (docker-compose.yml's commands).
//!
//! Unix only: signals are sent with `kill(1)`.

use std::{
    fs::{File, OpenOptions},
    io,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

/// A program, and the child process running it when it runs. Dropping it
/// kills the child.
#[derive(Debug)]
pub struct Process {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Where its stdout and stderr go; without one, stdout is discarded and
    /// stderr is the caller's.
    log: Option<PathBuf>,
    child: Option<Child>,
    /// Starts after the first append to the log rather than truncate it.
    started_once: bool,
}

impl Process {
    /// `program` with `args`, `env` (nothing else of the caller's
    /// environment but `PATH`), and its output in `log` when given. Not
    /// started yet.
    pub fn new(
        name: impl Into<String>,
        program: impl Into<PathBuf>,
        args: Vec<String>,
        env: Vec<(String, String)>,
        log: Option<PathBuf>,
    ) -> Process {
        Process {
            name: name.into(),
            program: program.into(),
            args,
            env,
            log,
            child: None,
            started_once: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The environment it is started with.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Its log file, when it has one.
    pub fn log_path(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// What it wrote to its log so far ("" without one).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|path| std::fs::read_to_string(path).ok())
            .unwrap_or_default()
    }

    /// The child's process id, while one runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the program (killing the child first if one runs).
    pub fn start(&mut self) -> io::Result<()> {
        self.kill();
        let (stdout, stderr) = match &self.log {
            Some(path) => {
                let file = self.open_log(path)?;
                (Stdio::from(file.try_clone()?), Stdio::from(file))
            }
            None => (Stdio::null(), Stdio::inherit()),
        };
        let child = Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .envs(std::env::var_os("PATH").map(|path| ("PATH", path)))
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!(
                        "cannot start {} ({}): {error}",
                        self.name,
                        self.program.display()
                    ),
                )
            })?;
        self.child = Some(child);
        self.started_once = true;
        Ok(())
    }

    fn open_log(&self, path: &Path) -> io::Result<File> {
        let mut options = OpenOptions::new();
        options.create(true);
        if self.started_once {
            options.append(true);
        } else {
            options.write(true).truncate(true);
        }
        options.open(path)
    }

    /// How the child exited, once it has; `None` while it runs (or when none
    /// was started).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Sends `signal` (as `kill` names it: `-TERM`, `-STOP`, `-CONT`) to the
    /// child.
    pub fn signal(&self, signal: &str) -> io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| io::Error::other(format!("{} does not run", self.name)))?;
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "kill {signal} {} ({pid}): {status}",
                self.name
            )))
        }
    }

    /// Waits up to `at_most` for the child to exit by itself, and forgets
    /// it.
    pub async fn wait_exit(&mut self, at_most: Duration) -> io::Result<ExitStatus> {
        let started = Instant::now();
        loop {
            let child = self
                .child
                .as_mut()
                .ok_or_else(|| io::Error::other(format!("{} does not run", self.name)))?;
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if started.elapsed() > at_most {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{} did not stop within {at_most:?}", self.name),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the child as an orchestrator does: SIGTERM, then waits up to
    /// `at_most` for it to exit.
    pub async fn stop(&mut self, at_most: Duration) -> io::Result<ExitStatus> {
        self.signal("-TERM")?;
        self.wait_exit(at_most).await
    }

    /// Kills the child (SIGKILL: no goodbye), resuming it first should it
    /// be frozen, and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(
                Command::new("kill")
                    .args(["-CONT", &child.id().to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status(),
            );
            drop(child.kill());
            drop(child.wait());
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
