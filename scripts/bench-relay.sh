#!/usr/bin/env bash
# Benchmark (not a test): the same turnutils_uclient load against
# tallow-relay and coturn's turnserver on loopback, alternating, in two modes:
#   peer   - each client relays to an external echo peer (turnutils_peer, -e)
#   c2c    - clients send to each other's relayed addresses (-y)
# For each run: messages per second, loss, RTT, and server CPU time per
# message (from /proc/PID/stat), plus peak RSS. Medians over the rounds and
# the tallow/coturn ratios go to BENCHMARKS.md.
#
# Knobs (environment): BENCH_ROUNDS (3), BENCH_CLIENTS (32), BENCH_MSGS (2000
# per client), BENCH_BYTES (120), BENCH_INTERVALS_MS ("1 0": a paced load,
# then uclient's full speed).
# Every run is bounded: uclient sends a fixed count and is killed after 120 s.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${BENCH_ROUNDS:-3}
clients=${BENCH_CLIENTS:-32}
msgs=${BENCH_MSGS:-2000}
bytes=${BENCH_BYTES:-120}
intervals=${BENCH_INTERVALS_MS:-1 0}
secret=bench-secret
tck=$(getconf CLK_TCK)

for tool in turnserver turnutils_uclient turnutils_peer; do
    command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install coturn" >&2; exit 1; }
done
cargo build --release -q -p tallow-relay --bin tallow-relay
relay_bin=target/release/tallow-relay

# turn-rs as a third column where it was built (`cargo install turn-server`,
# which needs Debian's protobuf-compiler): TURN_RS_BIN, or on PATH.
turnrs_bin=${TURN_RS_BIN:-$(command -v turn-server || true)}
servers=(tallow coturn)
if [[ -n $turnrs_bin && -x $turnrs_bin ]]; then
    servers+=(turnrs)
else
    echo "turn-rs not found (set TURN_RS_BIN or cargo install turn-server): two columns only" >&2
fi

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

peer_port=$(free_port)
turnutils_peer -L 127.0.0.1 -p "$peer_port" >/dev/null 2>&1 &
pids+=($!)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
peak_rss_kb() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }

start_server() { # name port -> pid on stdout
    local name=$1 port=$2
    case $name in
        coturn)
            turnserver -n --listening-ip=127.0.0.1 --listening-port="$port" --relay-ip=127.0.0.1 \
                --use-auth-secret --static-auth-secret="$secret" --realm=tallow \
                --allow-loopback-peers --no-cli --no-tls --no-dtls --log-file=stdout \
                --min-port=50000 --max-port=51000 >/dev/null 2>&1 &
            ;;
        turnrs)
            cat >"$work/turnrs.toml" <<TOML
[server]
port-range = "50000..51000"
realm = "tallow"
[[server.interfaces]]
transport = "udp"
listen = "127.0.0.1:$port"
external = "127.0.0.1:$port"
[log]
level = "error"
stdout = false
[auth]
static-auth-secret = "$secret"
TOML
            "$turnrs_bin" --config "$work/turnrs.toml" >/dev/null 2>&1 &
            ;;
        tallow)
            TURN_LISTEN=127.0.0.1:$port TURN_SECRET=$secret TURN_ALLOW_LOOPBACK=true \
                TURN_PORT_RANGE=50000-51000 TURN_MAX_BYTES_PER_SEC=0 TURN_USER_QUOTA=100000 \
                LOG_FORMAT=json "$relay_bin" >/dev/null 2>&1 &
            ;;
    esac
    echo $!
}

results="$work/results.tsv"
printf 'server\tmode\tinterval\tround\tsent\trecv\tseconds\tlost_pct\trtt_ms\tcpu_s\trss_kb\n' >"$results"

run_one() { # server mode interval round
    local server=$1 mode=$2 interval=$3 round=$4 port pid
    port=$(free_port)
    pid=$(start_server "$server" "$port")
    pids+=("$pid")
    sleep 0.5
    local args=(-c -W "$secret" -m "$clients" -n "$msgs" -l "$bytes" -z "$interval" -p "$port")
    if [[ $mode == peer ]]; then
        args+=(-e 127.0.0.1 -r "$peer_port")
    else
        args+=(-y)
    fi
    local before after t0 t1 out
    before=$(cpu_ticks "$pid")
    t0=$(date +%s.%N)
    out=$(timeout 120 turnutils_uclient "${args[@]}" 127.0.0.1 2>&1 || true)
    t1=$(date +%s.%N)
    after=$(cpu_ticks "$pid")
    local rss
    rss=$(peak_rss_kb "$pid")
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    printf '%s\n' "$out" >"$work/uclient.out"
    python3 - "$server" "$mode" "$interval" "$round" "$before" "$after" "$tck" "$t0" "$t1" "$rss" "$work/uclient.out" >>"$results" <<'EOF'
import re, sys
server, mode, interval, rnd, before, after, tck, t0, t1, rss, outfile = sys.argv[1:]
out = open(outfile).read()
tot = [l for l in out.splitlines() if "tot_send_msgs=" in l and "msz=" not in l]
m = re.search(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)", tot[-1]) if tot else None
sent, recv = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
lost = re.search(r"Total lost packets \d+ \(([\d.]+)%\)", out)
rtt = re.search(r"Average round trip delay ([\d.]+) ms", out)
secs = float(t1) - float(t0)
cpu = (int(after) - int(before)) / int(tck)
print(f"{server}\t{mode}\t{interval}\t{rnd}\t{sent}\t{recv}\t{secs:.3f}\t{lost.group(1) if lost else 'nan'}\t"
      f"{rtt.group(1) if rtt else 'nan'}\t{cpu:.3f}\t{rss}")
EOF
    tail -1 "$results" >&2
}

echo "load: $clients clients x $msgs messages of $bytes bytes, intervals (ms): $intervals; $rounds rounds" >&2
for round in $(seq 1 "$rounds"); do
    for interval in $intervals; do
        for mode in peer c2c; do
            # Rotate which server goes first, so drift hits all alike.
            n=${#servers[@]}
            for k in $(seq 0 $((n - 1))); do
                server=${servers[$(( (k + round) % n ))]}
                # turn-rs relays only between its own allocations: it refuses
                # external peers with 403, so it has no `peer` column.
                if [[ $server == turnrs && $mode == peer ]]; then continue; fi
                run_one "$server" "$mode" "$interval" "$round"
            done
        done
    done
done

mkdir -p bench/results
python3 - "$results" "$clients" "$msgs" "$bytes" "$intervals" "$rounds" <<'EOF' >bench/results/relay.md
import csv, statistics, sys, datetime, platform, os
path, clients, msgs, size, intervals, rounds = sys.argv[1:]
rows = list(csv.DictReader(open(path), delimiter="\t"))
def med(server, mode, interval, f):
    vals = [f(r) for r in rows
            if r["server"] == server and r["mode"] == mode and r["interval"] == interval]
    vals = [v for v in vals if v == v]
    return statistics.median(vals) if vals else float("nan")
rate = lambda r: int(r["recv"]) / float(r["seconds"]) if float(r["seconds"]) else float("nan")
cpu_us = lambda r: 1e6 * float(r["cpu_s"]) / int(r["sent"]) if int(r["sent"]) else float("nan")
loss = lambda r: 100.0 * (int(r["sent"]) - int(r["recv"])) / int(r["sent"]) if int(r["sent"]) else float("nan")
rtt = lambda r: float(r["rtt_ms"])
rss = lambda r: int(r["rss_kb"]) / 1024
coturn_version = os.popen("dpkg-query -W -f='${Version}' coturn 2>/dev/null").read()
print(f"## TURN relay: tallow-relay vs coturn {coturn_version}\n")
print(f"- Date: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC; host: {platform.machine()}, {os.cpu_count()} CPUs, loopback.")
print(f"- Load: `turnutils_uclient -c -m {clients} -n {msgs} -l {size} -z Z` "
      f"({int(clients)*int(msgs)} messages per run) with Z (ms between a client's messages) in "
      f"{intervals.split()}; Z=0 is uclient's full speed. {rounds} rounds, servers alternating.")
print("- On 2 cores the load generator competes with the server for CPU, so wall-clock rates")
print("  are bounded by uclient; server CPU per message is the fairer comparison.")
print("- Modes: `peer` relays to `turnutils_peer` (`-e`), `c2c` sends between two allocations (`-y`).")
print("- Server CPU per message: server user+system CPU time during the run / messages sent.")
print("- Servers on defaults plus loopback peers allowed; tallow-relay with its bandwidth cap and")
print("  per-user quota off (uclient uses one username for all clients). turn-rs, where present,")
print("  relays only between its own allocations, so it appears in `c2c` only.\n")
have_turnrs = any(r["server"] == "turnrs" for r in rows)
if have_turnrs:
    print("| mode | Z ms | metric | tallow-relay | coturn | turn-rs | tallow / coturn | tallow / turn-rs |")
    print("|---|---|---|---|---|---|---|---|")
else:
    print("| mode | Z ms | metric | tallow-relay | coturn | tallow / coturn |")
    print("|---|---|---|---|---|---|")
def ratio(a, b):
    return f"{a / b:.2f}" if b and b == b and a == a else "n/a"
for interval in intervals.split():
  for mode in ("peer", "c2c"):
    for name, f, fmt, better in (
        ("messages/s received", rate, "{:.0f}", "higher"),
        ("loss %", loss, "{:.3f}", "lower"),
        ("RTT ms (uclient)", rtt, "{:.3f}", "lower"),
        ("server CPU µs/message", cpu_us, "{:.2f}", "lower"),
        ("peak RSS MiB", rss, "{:.1f}", "lower"),
    ):
        t, c = med("tallow", mode, interval, f), med("coturn", mode, interval, f)
        cells = f"| {mode} | {interval} | {name} ({better} is better) | {fmt.format(t)} | {fmt.format(c)} |"
        if have_turnrs:
            x = med("turnrs", mode, interval, f)
            xs = fmt.format(x) if x == x else "n/a (403 on external peers)"
            print(f"{cells} {xs} | {ratio(t, c)} | {ratio(t, x)} |")
        else:
            print(f"{cells} {ratio(t, c)} |")
print("\n### Raw runs\n")
print("| server | mode | Z ms | round | sent | received | seconds | uclient loss % | RTT ms | server CPU s | peak RSS KiB |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    print(f"| {r['server']} | {r['mode']} | {r['interval']} | {r['round']} | {r['sent']} | {r['recv']} | {r['seconds']} | "
          f"{r['lost_pct']} | {r['rtt_ms']} | {r['cpu_s']} | {r['rss_kb']} |")
EOF

scripts/bench-report.sh
cat bench/results/relay.md
