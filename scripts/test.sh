#!/usr/bin/env bash
# The whole Troupe test suite: what the README's test command and CI run.
#
# 1. Installs what the multi-host tests need when it is missing and we are
#    root (iproute2 for network namespaces, nftables for cutting links).
#    Without root or without namespace support those tests say they were
#    skipped; nothing else depends on them.
#    Installs Python's `cryptography` (pip) for the certificate interop
#    test when it is missing; without it that test says it was skipped.
#    Installs Chromium (Debian package `chromium`) for the browser tests
#    (the space-time diagrams of `troupe trace view`) when root; without
#    it those tests say "SKIPPED: chromium not installed".
#    Installs `promtool` (Debian package `prometheus`, when root) for the
#    test that checks a real scrape of `GET /metrics`; without it that test
#    says SKIPPED (the strict exposition-format parser test still runs).
# 2. Says in one line whether the multi-host tests will run or be skipped,
#    and why (`scripts/netns.sh check`), and the same for the browser tests.
# 3. Runs every test of the workspace (unit, property, simulation,
#    multi-process over QUIC on loopback, multi-host in namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v nft >/dev/null 2>&1 || need+=(nftables)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing ${need[*]} for the multi-host tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/dev/null 2>&1 \
      || echo "== could not install ${need[*]}; multi-host tests will report that they were skipped"
  else
    echo "== ${need[*]} missing and not root: multi-host tests will report that they were skipped"
  fi
fi

# The certificate interop test checks issued certificates with Python's
# `cryptography` (a strict X.509 stack); without it that test says SKIPPED.
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import cryptography' >/dev/null 2>&1; then
  echo "== installing Python cryptography for the certificate interop test"
  python3 -m pip install --quiet cryptography >/dev/null 2>&1 \
    || echo "== could not install Python cryptography; the certificate interop test will report SKIPPED"
fi

# The browser tests (apps/tests/trace_view_browser.rs) drive headless
# Chromium; without it they report SKIPPED.
have_chromium() {
  [ -n "${CHROMIUM:-}" ] && [ -x "${CHROMIUM}" ] && return 0
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
    || command -v google-chrome >/dev/null 2>&1
}
if ! have_chromium && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing chromium for the browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "== could not install chromium"
fi
if have_chromium; then
  echo "== browser tests will run (headless chromium available)"
else
  echo "== browser tests will be SKIPPED: chromium not installed (apt-get install chromium as root, or set CHROMIUM)"
fi

# promtool checks a real scrape of GET /metrics (tests/metrics.rs); the
# package's daemon is not needed and not started by this script.
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing promtool (Debian package prometheus) for the metrics format test"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >/dev/null 2>&1 \
      || echo "== could not install prometheus; the promtool test will report SKIPPED"
  else
    echo "== promtool missing and not root: the promtool test will report SKIPPED"
  fi
fi

if why=$(bash scripts/netns.sh check 2>&1); then
  echo "== multi-host tests will run (network namespaces and nftables available)"
else
  echo "== multi-host tests will be SKIPPED: ${why:-scripts/netns.sh check failed}"
fi

echo "== cargo test --workspace"
exec cargo test --workspace "$@"
