//! The shipped nginx.conf in front of a real server, for the tests that
//! check what really passes through it. Needs Debian's nginx
//! (scripts/test.sh installs it). TLS is swapped for a plain listener on a
//! free loopback port; everything else is the file as shipped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub struct Nginx {
    child: Child,
    pub addr: SocketAddr,
    /// The plain-HTTP server (the shipped `listen 80`).
    #[allow(dead_code)]
    pub http_addr: SocketAddr,
    _dir: TempDir,
    access_log: PathBuf,
}

impl Nginx {
    /// The access log's lines (the shipped JSON format) so far.
    #[allow(dead_code)]
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.access_log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("access log lines are JSON"))
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its workers; SIGKILL would orphan them.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nginx_binary() -> PathBuf {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("nginx is not installed: run scripts/test.sh, which installs it");
}

/// Start the shipped nginx.conf in front of `upstream`.
pub fn start(upstream: SocketAddr) -> Nginx {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let shipped = std::fs::read_to_string(repo.join("nginx.conf")).unwrap();
    let https_port = free_port();
    let http_port = free_port();
    let dir =
        std::env::temp_dir().join(format!("tallow-nginx-{}-{https_port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let web = repo.join("web").canonicalize().unwrap();
    let mut conf = String::new();
    for line in shipped.lines() {
        let t = line.trim();
        let line = if t.starts_with("ssl_") || t.starts_with("listen [::]") {
            continue;
        } else if t == "listen 443 ssl http2;" {
            format!("listen 127.0.0.1:{https_port};")
        } else if t == "listen 80;" {
            format!("listen 127.0.0.1:{http_port};")
        } else if t.starts_with("server tallow:8080") {
            format!("server {upstream};")
        } else if t.starts_with("root /usr/share/nginx/html") {
            format!("root {};", web.display())
        } else if t.starts_with("pid ") {
            format!("pid {}/nginx.pid;", dir.display())
        } else {
            line.replace("/tmp/nginx-", &format!("{}/", dir.display()))
        };
        conf.push_str(&line);
        conf.push('\n');
    }
    // The changes above must have happened, or we test something else.
    assert!(conf.contains(&format!("server {upstream};")));
    assert!(conf.contains(&format!("listen 127.0.0.1:{https_port};")));
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    // The shipped file logs to stdout, as containers expect.
    let access_log = dir.join("access.log");
    let stdout = std::fs::File::create(&access_log).unwrap();
    let child = Command::new(nginx_binary())
        .arg("-c")
        .arg(&conf_path)
        .arg("-p")
        .arg(&dir)
        .args(["-g", "daemon off; user root;"])
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nginx");
    let addr: SocketAddr = format!("127.0.0.1:{https_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nginx did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Nginx {
        child,
        addr,
        http_addr: format!("127.0.0.1:{http_port}").parse().unwrap(),
        _dir: TempDir(dir),
        access_log,
    }
}
