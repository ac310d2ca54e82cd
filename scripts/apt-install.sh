#!/usr/bin/env bash
# Install Debian packages for the checks and tests: scripts/apt-install.sh PKG...
# Packages such as nginx, coturn and prometheus start their system service
# on install; the tests start their own instances on free ports, so a
# policy-rc.d keeps services down while installing (and is removed after,
# unless one was already there).
set -euo pipefail
(($#)) || exit 0
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
policy=/usr/sbin/policy-rc.d
added_policy=false
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    added_policy=true
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
if $added_policy; then $sudo rm -f "$policy"; fi
