//! Prometheus metrics, rendered in the OpenMetrics text format that
//! Prometheus scrapes.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{text::encode, DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::protocol::ErrorCode;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub connections_total: Counter,
    pub sessions: Gauge,
    pub nameplates: Gauge,
    pub rooms: Gauge,
    pub sessions_created: Counter,
    pub sessions_paired: Counter,
    pub rooms_created: Counter,
    pub room_invites: Counter,
    pub messages_forwarded: Counter,
    pub errors: Family<CodeLabel, Counter>,
    /// The configured TALLOW_MAX_CONNECTIONS.
    pub max_connections: Gauge,
    /// 1 when /api/ready would answer 200, set at each scrape.
    pub ready: Gauge,
    /// 1 when the presence store answered the readiness probe.
    pub presence_up: Gauge,
    /// Failed heartbeats and sweeps against the presence store.
    pub presence_errors: Counter,
}

impl Metrics {
    /// Metrics of this node, with the embedded relay's when it runs.
    pub fn new(
        relay: Option<&tallow_relay::metrics::RelayMetrics>,
        max_connections: usize,
    ) -> Self {
        let mut registry = Registry::with_prefix("tallow");
        if let Some(relay) = relay {
            relay.register(&mut registry);
        }
        let m = Metrics {
            connections: Gauge::default(),
            connections_total: Counter::default(),
            sessions: Gauge::default(),
            nameplates: Gauge::default(),
            rooms: Gauge::default(),
            sessions_created: Counter::default(),
            sessions_paired: Counter::default(),
            rooms_created: Counter::default(),
            room_invites: Counter::default(),
            messages_forwarded: Counter::default(),
            errors: Family::default(),
            max_connections: Gauge::default(),
            ready: Gauge::default(),
            presence_up: Gauge::default(),
            presence_errors: Counter::default(),
            registry: Registry::default(),
        };
        m.max_connections
            .set(i64::try_from(max_connections).unwrap_or(i64::MAX));
        registry.register(
            "max_connections",
            "WebSocket connections this node accepts at once (TALLOW_MAX_CONNECTIONS)",
            m.max_connections.clone(),
        );
        registry.register(
            "ready",
            "1 when this node is ready (presence store answers, not draining), as /api/ready; 0 otherwise",
            m.ready.clone(),
        );
        registry.register(
            "presence_up",
            "1 when the presence store (Redis, or memory) answered the readiness probe at this scrape",
            m.presence_up.clone(),
        );
        registry.register(
            "presence_errors",
            "Presence store heartbeats and sweeps that failed on this node",
            m.presence_errors.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
        registry.register(
            "connections",
            "Open WebSocket connections on this node",
            m.connections.clone(),
        );
        registry.register(
            "connections_accepted",
            "WebSocket connections accepted",
            m.connections_total.clone(),
        );
        registry.register(
            "sessions",
            "Live sessions in the presence store",
            m.sessions.clone(),
        );
        registry.register(
            "nameplates",
            "Nameplates waiting for a joiner",
            m.nameplates.clone(),
        );
        registry.register(
            "rooms",
            "Rooms live in the presence store (named and nearby)",
            m.rooms.clone(),
        );
        registry.register(
            "sessions_created",
            "Sessions created on this node",
            m.sessions_created.clone(),
        );
        registry.register(
            "sessions_paired",
            "Sessions paired on this node",
            m.sessions_paired.clone(),
        );
        registry.register(
            "rooms_created",
            "Rooms created on this node",
            m.rooms_created.clone(),
        );
        registry.register(
            "room_invites",
            "Pairwise sessions opened by room invitations on this node",
            m.room_invites.clone(),
        );
        registry.register(
            "messages_forwarded",
            "Messages delivered to clients of this node",
            m.messages_forwarded.clone(),
        );
        registry.register(
            "errors",
            "Protocol errors sent to clients, by code",
            m.errors.clone(),
        );
        // Every code appears from the start so that rate() works from zero.
        for code in ErrorCode::ALL {
            let _ = m.errors.get_or_create(&CodeLabel {
                code: code.as_str(),
            });
        }
        Metrics { registry, ..m }
    }

    pub fn error(&self, code: ErrorCode) {
        self.errors
            .get_or_create(&CodeLabel {
                code: code.as_str(),
            })
            .inc();
    }

    /// Record the outcome of a readiness check (taken at scrape time).
    pub(crate) fn record_readiness(&self, r: &crate::readiness::Readiness) {
        self.ready.set(i64::from(r.ready()));
        self.presence_up.set(i64::from(r.presence_ok));
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        encode(&mut out, &self.registry).expect("metrics encode");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(None, 0)
    }
}

/// CPU, memory and file descriptors of this process, read from /proc at
/// each scrape (Linux; elsewhere the series are absent).
#[derive(Debug)]
struct ProcessCollector;

/// The unit of CPU times in /proc/PID/stat: USER_HZ, which the kernel fixes
/// at 100 in its user-space ABI on x86 and ARM.
const USER_HZ: f64 = 100.0;

/// What /proc says about this process.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    pub threads: u64,
}

impl ProcessStats {
    /// None where /proc/self is not there to read.
    pub fn read() -> Option<ProcessStats> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The fields after the command name, which is in parentheses and may
        // hold spaces: field 3 (state) comes first, utime is 14, stime 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let field = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
        // Sizes from /proc/self/status, in kB there: no page size to know.
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        };
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| {
                l.lines()
                    .find_map(|l| l.strip_prefix("Max open files"))?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            });
        Some(ProcessStats {
            cpu_seconds: (field(14)? + field(15)?) as f64 / USER_HZ,
            resident_bytes: line("VmRSS:")? * 1024,
            virtual_bytes: line("VmSize:")? * 1024,
            open_fds: std::fs::read_dir("/proc/self/fd").ok()?.count() as u64,
            max_fds,
            threads: line("Threads:")?,
        })
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = ProcessStats::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(p.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time of this process, in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let mut gauge = |name: &str, help: &str, v: u64| {
            let g = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        gauge(
            "process_resident_memory_bytes",
            "Resident memory of this process, in bytes",
            p.resident_bytes,
        )?;
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory of this process, in bytes",
            p.virtual_bytes,
        )?;
        gauge(
            "process_open_fds",
            "Open file descriptors of this process (sockets included)",
            p.open_fds,
        )?;
        if let Some(max) = p.max_fds {
            gauge(
                "process_max_fds",
                "This process's limit on open file descriptors",
                max,
            )?;
        }
        gauge("process_threads", "Threads of this process", p.threads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_and_process_figures_are_exported() {
        let m = Metrics::new(None, 1234);
        let out = m.render();
        assert!(out.contains("tallow_max_connections 1234\n"), "{out}");
        assert!(
            out.contains("tallow_ready 0\n"),
            "nothing checked yet: {out}"
        );
        assert!(out.contains("tallow_presence_up 0\n"), "{out}");
        assert!(out.contains("tallow_presence_errors_total 0\n"), "{out}");
        for name in [
            "# TYPE tallow_process_cpu_seconds counter",
            "tallow_process_cpu_seconds_total ",
            "tallow_process_resident_memory_bytes ",
            "tallow_process_virtual_memory_bytes ",
            "tallow_process_open_fds ",
            "tallow_process_max_fds ",
            "tallow_process_threads ",
        ] {
            assert!(out.contains(name), "{name} missing from\n{out}");
        }
    }

    /// The figures move with what the process does, so they are read from
    /// this process and not made up.
    #[test]
    fn process_figures_follow_the_process() {
        let before = ProcessStats::read().expect("/proc/self");
        assert!(before.threads >= 1);
        assert!(before.max_fds.is_some_and(|m| m >= before.open_fds));
        assert!(before.virtual_bytes >= before.resident_bytes);

        let files: Vec<std::fs::File> = (0..64)
            .map(|_| std::fs::File::open("/proc/self/stat").unwrap())
            .collect();
        let touched = vec![1u8; 64 << 20];
        let after = ProcessStats::read().unwrap();
        assert!(
            after.open_fds >= before.open_fds + 48,
            "{before:?} {after:?}"
        );
        assert!(
            after.resident_bytes >= before.resident_bytes + (32 << 20),
            "{before:?} {after:?}"
        );
        assert_eq!(touched.iter().map(|&b| u64::from(b)).sum::<u64>(), 64 << 20);
        drop(files);

        // CPU time advances in ticks of 10 ms: spin until it does, bounded.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        let mut now = ProcessStats::read().unwrap();
        while now.cpu_seconds <= before.cpu_seconds
            && start.elapsed() < std::time::Duration::from_secs(20)
        {
            for i in 0..1_000_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
            now = ProcessStats::read().unwrap();
        }
        assert!(now.cpu_seconds > before.cpu_seconds, "{before:?} {now:?}");
    }
}
