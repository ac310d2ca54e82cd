//! The processes a NAT test runs inside its namespaces (tallow-server and
//! two `tallow` CLIs): their output collected as it comes, bounded waits,
//! and killed on drop so a panicking test leaves nothing behind (and its
//! namespaces can be deleted).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Proc {
    pub name: &'static str,
    child: Child,
    out: Arc<Mutex<String>>,
    err: Arc<Mutex<String>>,
}

fn collect(mut from: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let buf = Arc::new(Mutex::new(String::new()));
    let b = Arc::clone(&buf);
    std::thread::spawn(move || {
        let mut r = BufReader::new(&mut from);
        let mut line = String::new();
        while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
            b.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    buf
}

impl Proc {
    pub fn spawn(name: &'static str, mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {cmd:?}: {e}"));
        let out = collect(child.stdout.take().expect("piped"));
        let err = collect(child.stderr.take().expect("piped"));
        Proc {
            name,
            child,
            out,
            err,
        }
    }

    pub fn stdout(&self) -> String {
        self.out.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Both streams, for a failure message.
    pub fn dump(&self) -> String {
        format!(
            "--- {} stdout\n{}--- {} stderr\n{}",
            self.name,
            self.stdout(),
            self.name,
            self.stderr()
        )
    }

    /// Polls (every 50 ms, until `within`) for `pick` to find something in
    /// (stdout, stderr); panics with the output on timeout or early exit.
    pub fn wait_for<T>(
        &mut self,
        within: Duration,
        mut pick: impl FnMut(&str, &str) -> Option<T>,
    ) -> T {
        let until = Instant::now() + within;
        loop {
            if let Some(v) = pick(&self.stdout(), &self.stderr()) {
                return v;
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                // Let the readers catch the last lines.
                std::thread::sleep(Duration::from_millis(200));
                if let Some(v) = pick(&self.stdout(), &self.stderr()) {
                    return v;
                }
                panic!(
                    "{} exited ({st}) before what the test waits for\n{}",
                    self.name,
                    self.dump()
                );
            }
            assert!(
                Instant::now() < until,
                "{}: not seen within {within:?}\n{}",
                self.name,
                self.dump()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status, or `None` if it is still running at `until`.
    pub fn wait_until(&mut self, until: Instant) -> Option<ExitStatus> {
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                // Let the readers catch the last lines.
                std::thread::sleep(Duration::from_millis(200));
                return Some(st);
            }
            if Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
