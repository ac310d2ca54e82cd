#!/usr/bin/env bash
# Checks monitoring/ with real tools, from a fresh Debian machine:
#   1. installs Debian's prometheus package (promtool and the server) and
#      yamllint when missing, with the system service kept down;
#   2. yamllint --strict on the rule and test files;
#   3. promtool check rules, then promtool test rules (a firing and a quiet
#      case for every alert, monitoring/alerts.test.yml);
#   4. checks that every alert in alerts.yml has a unit test and a runbook
#      line in monitoring/README.md, and that the dashboard is valid JSON.
# The end-to-end test (a real Prometheus scraping a real tallow-server and
# every dashboard query answered) is the Rust test
# signaling/tests/prometheus_dashboard.rs; it needs the prometheus binary
# this script installs. Pass --with-e2e to run it here too.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

export PATH="$PATH:/usr/sbin"
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v yamllint >/dev/null 2>&1 || missing+=(yamllint)
command -v jq >/dev/null 2>&1 || missing+=(jq)
if ((${#missing[@]})); then
    step "installing Debian packages: ${missing[*]}"
    ./scripts/apt-install.sh "${missing[@]}"
fi

step "yamllint --strict monitoring/"
yamllint --strict -c .yamllint.yml monitoring/

step "promtool check rules"
promtool check rules monitoring/alerts.yml

step "promtool test rules"
# Run from monitoring/: the test file names its rule file relative to itself.
(cd monitoring && promtool test rules alerts.test.yml)

step "every alert has a unit test and a runbook entry"
status=0
mapfile -t alerts < <(sed -n 's/^ *- alert: *//p' monitoring/alerts.yml)
((${#alerts[@]})) || { echo "no alerts found in monitoring/alerts.yml"; exit 1; }
for a in "${alerts[@]}"; do
    # A firing case lists the alert with exp_alerts holding labels; a quiet
    # case lists it with an empty exp_alerts.
    fires=$(awk -v a="$a" '
        $0 ~ "alertname: " a "$" { inside = 1; next }
        inside && /exp_alerts: \[\]/ { quiet++; inside = 0; next }
        inside && /exp_alerts:/ { fire++; inside = 0; next }
        END { printf "%d %d", fire, quiet }' monitoring/alerts.test.yml)
    read -r fire quiet <<<"$fires"
    if ((fire == 0 || quiet == 0)); then
        echo "alert $a: $fire firing and $quiet quiet test cases (need at least one of each)"
        status=1
    fi
    grep -q "^### $a\$" monitoring/README.md || { echo "alert $a has no '### $a' section in monitoring/README.md"; status=1; }
done
((status == 0)) || exit 1
echo "${#alerts[@]} alerts, each tested firing and quiet, each documented"

step "dashboard JSON"
jq -e '.panels | length > 0' monitoring/grafana/tallow.json >/dev/null
echo "monitoring/grafana/tallow.json: $(jq '[.panels[] | select(.targets)] | length' monitoring/grafana/tallow.json) panels with queries"

if [[ ${1:-} == --with-e2e ]]; then
    step "a real Prometheus scraping a real tallow-server"
    cargo nextest run -p tallow-signaling --test prometheus_dashboard
fi
