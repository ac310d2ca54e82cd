#!/usr/bin/env bash
# Benchmark (not a test): tallow-server's signaling against a reference
# signaling server, PeerJS (npm `peer`, pinned in bench/peerjs), on loopback,
# alternating, with the same load generator (bench/, `signal-load`):
#   forward - P pairs, one peer of each sending to the other at an even rate;
#             latency percentiles of delivery and server CPU per message;
#   idle    - N idle WebSocket connections; server memory per connection.
# Writes bench/results/signaling.md and rebuilds BENCHMARKS.md.
#
# Knobs: BENCH_ROUNDS (3), BENCH_PAIRS (100), BENCH_RATES ("5000 20000"),
# BENCH_SECONDS (10), BENCH_IDLE (10000, bounded by the open-files limit).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${BENCH_ROUNDS:-3}
pairs=${BENCH_PAIRS:-100}
rates=${BENCH_RATES:-5000 20000}
seconds=${BENCH_SECONDS:-10}
idle=${BENCH_IDLE:-10000}
tck=$(getconf CLK_TCK)

cargo build --release -q -p tallow-signaling --bin tallow-server
cargo build --release -q -p tallow-bench --bin signal-load
(cd bench/peerjs && npm ci --no-audit --no-fund --loglevel=error)
load=target/release/signal-load

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket
s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

start_server() { # name port -> pid
    case $1 in
        tallow)
            TALLOW_LISTEN=127.0.0.1:$2 TURN_ENABLED=false LOG_FORMAT=json \
                TALLOW_MAX_MESSAGES_PER_SEC=100000 TALLOW_MAX_SESSIONS_PER_IP=1000000 \
                TALLOW_MAX_CONNECTIONS=1000000 TALLOW_MAX_CONNECTIONS_PER_IP=1000000 \
                TALLOW_MAX_UPGRADES_PER_IP_PER_MIN=4000000000 target/release/tallow-server >/dev/null 2>&1 &
            ;;
        peerjs)
            bench/peerjs/node_modules/.bin/peerjs --port "$2" --host 127.0.0.1 \
                --concurrent_limit 1000000 >/dev/null 2>&1 &
            ;;
    esac
    echo $!
}

wait_port() {
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "server on port $1 did not start" >&2
    exit 1
}

results="$work/results.jsonl"
: >"$results"

for round in $(seq 1 "$rounds"); do
    if (( round % 2 )); then order=(tallow peerjs); else order=(peerjs tallow); fi
    for rate in $rates; do
        for server in "${order[@]}"; do
            port=$(free_port)
            pid=$(start_server "$server" "$port"); pids+=("$pid")
            wait_port "$port"
            before=$(cpu_ticks "$pid")
            out=$(timeout $((seconds + 60)) "$load" --target "$server" --mode forward \
                --addr "127.0.0.1:$port" --pairs "$pairs" --rate "$rate" --seconds "$seconds" | tail -1)
            after=$(cpu_ticks "$pid")
            kill "$pid"; wait "$pid" 2>/dev/null || true
            echo "$out" | python3 -c "import json,sys
r=json.load(sys.stdin); r.update(mode='forward', round=$round, cpu_s=($after-$before)/$tck)
print(json.dumps(r))" >>"$results"
            tail -1 "$results" >&2
        done
    done
    for server in "${order[@]}"; do
        port=$(free_port)
        pid=$(start_server "$server" "$port"); pids+=("$pid")
        wait_port "$port"
        base_rss=$(rss_kb "$pid")
        fifo="$work/idle.out"
        timeout 300 "$load" --target "$server" --mode idle --addr "127.0.0.1:$port" \
            --connections "$idle" --hold 3 >"$fifo" &
        gen=$!
        for _ in $(seq 1 600); do grep -q ready "$fifo" && break; sleep 0.1; done
        sleep 1
        held_rss=$(rss_kb "$pid")
        wait "$gen" || true
        kill "$pid"; wait "$pid" 2>/dev/null || true
        python3 -c "import json
print(json.dumps(dict(mode='idle', target='$server', round=$round, connections=$idle,
  base_kb=$base_rss, held_kb=$held_rss)))" >>"$results"
        tail -1 "$results" >&2
    done
done

python3 - "$results" "$pairs" "$seconds" "$rounds" <<'EOF' >bench/results/signaling.md
import json, statistics, sys, datetime, os, platform
path, pairs, seconds, rounds = sys.argv[1:]
rows = [json.loads(l) for l in open(path)]
fwd = [r for r in rows if r["mode"] == "forward"]
idle = [r for r in rows if r["mode"] == "idle"]
def med(rs, f):
    v = [f(r) for r in rs]
    return statistics.median(v) if v else float("nan")
print("## Signaling: tallow-server vs PeerJS server 1.0.2\n")
print(f"- Date: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC; host: {platform.machine()}, {os.cpu_count()} CPUs, loopback.")
print(f"- forward: {pairs} pairs, one peer of each sending to the other at an even rate for {seconds} s; latency")
print("  from send to receipt in the load generator (`bench/`, `signal-load`), which shares the 2 cores with")
print(f"  the server; medians of {rounds} rounds, servers alternating. tallow-server carries each message")
print("  through its full path (sequence check, mailbox, acknowledgements); PeerJS forwards fire and forget.")
print("- idle: connections opened and held; memory = server RSS growth / connections.\n")
print("| load | metric | tallow-server | PeerJS | tallow / PeerJS |")
print("|---|---|---|---|---|")
for rate in sorted({r["rate"] for r in fwd}):
    t = [r for r in fwd if r["target"] == "tallow" and r["rate"] == rate]
    p = [r for r in fwd if r["target"] == "peerjs" and r["rate"] == rate]
    for name, f, fmt in (
        ("delivered %", lambda r: 100 * r["delivered"] / r["expected"], "{:.2f}"),
        ("p50 ms", lambda r: r["p50_us"] / 1000, "{:.2f}"),
        ("p99 ms", lambda r: r["p99_us"] / 1000, "{:.2f}"),
        ("p99.9 ms", lambda r: r["p999_us"] / 1000, "{:.2f}"),
        ("server CPU µs/message", lambda r: 1e6 * r["cpu_s"] / max(r["delivered"], 1), "{:.1f}"),
    ):
        a, b = med(t, f), med(p, f)
        print(f"| {rate} msg/s | {name} | {fmt.format(a)} | {fmt.format(b)} | {a / b:.2f} |" if b else
              f"| {rate} msg/s | {name} | {fmt.format(a)} | {fmt.format(b)} | n/a |")
for target in ("tallow", "peerjs"):
    pass
t = [r for r in idle if r["target"] == "tallow"]
p = [r for r in idle if r["target"] == "peerjs"]
per = lambda r: (r["held_kb"] - r["base_kb"]) / r["connections"]
if t and p:
    n = t[0]["connections"]
    a, b = med(t, per), med(p, per)
    print(f"| {n} idle connections | KiB per connection | {a:.1f} | {b:.1f} | {a / b:.2f} |")
    print(f"| {n} idle connections | projected MiB for 50,000 | {a * 50000 / 1024:.0f} | {b * 50000 / 1024:.0f} | |")
print()
EOF

scripts/bench-report.sh
cat bench/results/signaling.md
