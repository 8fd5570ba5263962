#!/usr/bin/env bash
# Test hosts in network namespaces, for the multi-host tests.
#
#   netns.sh up   PREFIX N      N namespaces PREFIX-h1..hN, each with a veth into a
#                               bridge PREFIX-br in the calling namespace;
#                               host i is $NET.i/24, the bridge $NET.254/24;
#                               prints NET (pass it back as TROUPE_TEST_NET)
#
# NET is the first documentation range of 198.51.100 (TEST-NET-2), 203.0.113
# (TEST-NET-3) and 192.0.2 (TEST-NET-1) that the calling namespace does not
# route anywhere yet (some machines use TEST-NET-1 for their own uplink; a
# test run already in progress holds another), so test traffic can never
# leave the machine and concurrent runs do not collide. TROUPE_TEST_NET
# forces one range. Before choosing, `up` removes what earlier runs left
# behind when they were killed: a PREFIX of the form tr<pid> whose process
# is gone.
#   netns.sh cut  PREFIX I J    drop all traffic between hosts I and J (nftables in host I)
#   netns.sh heal PREFIX I      remove host I's drop rules
#   netns.sh reach PREFIX I J   exit 0 if host J answers host I (a TCP connection
#                               attempt to NET.J port 9, which J's kernel refuses:
#                               no listener or extra tool needed), 1 if nothing
#                               comes back within 3 s (the link is cut), 2 if the
#                               probe itself failed
#   netns.sh exec PREFIX I CMD  run CMD inside host I
#   netns.sh down PREFIX N      remove everything `up` created
#   netns.sh check              exit 0 if namespaces can be created and links cut
#                               here; otherwise print why and exit 1. A non-empty
#                               TROUPE_NETNS_UNAVAILABLE makes it fail with that
#                               text as the reason (to skip the multi-host tests
#                               on purpose, and to test the skip itself)
#
# Bridged frames must not go through the host's iptables (Docker's FORWARD
# DROP policy applies to bridges when br_netfilter is loaded), so `up` sets the
# host-wide sysctl net.bridge.bridge-nf-call-iptables to 0. The value it had
# before the first of the runs that are up now is saved in $SAVED, and the
# `down` that leaves no test bridge behind (test bridges carry the alias
# $ALIAS; concurrent runs share the sysctl) writes it back. `up` and `down`
# hold a lock while they look at and change this state.
set -euo pipefail
NET=${TROUPE_TEST_NET:-198.51.100}
SYSCTL=/proc/sys/net/bridge/bridge-nf-call-iptables
SAVED=/tmp/troupe-netns-bridge-nf-call-iptables.saved
ALIAS=troupe-netns-test
LOCK=/tmp/troupe-netns.lock

# One `up` or `down` at a time: two runs never pick the same range, and the
# saved sysctl value is never read and written concurrently.
lock() {
  if command -v flock >/dev/null; then
    exec 9>"$LOCK"
    flock 9
  fi
}

# Names of the test bridges that exist now.
test_bridges() {
  ip -o link show type bridge | grep -F "alias $ALIAS" | sed -nE 's/^[0-9]+: ([^:@]+)[:@].*/\1/p' || true
}

cmd=${1:?usage: netns.sh up|cut|heal|reach|exec|down|check ...}
shift

case "$cmd" in
  check)
    if [ -n "${TROUPE_NETNS_UNAVAILABLE:-}" ]; then
      echo "$TROUPE_NETNS_UNAVAILABLE (TROUPE_NETNS_UNAVAILABLE is set)"; exit 1
    fi
    [ "$(id -u)" = 0 ] || { echo "not root"; exit 1; }
    command -v ip >/dev/null || { echo "ip (iproute2) not installed"; exit 1; }
    command -v nft >/dev/null || { echo "nft (nftables) not installed; it cuts links between hosts"; exit 1; }
    command -v timeout >/dev/null || { echo "timeout (coreutils) not installed"; exit 1; }
    probe="troupe-probe-$$"
    ip netns add "$probe" 2>/dev/null || { echo "ip netns add is not permitted here"; exit 1; }
    ip netns del "$probe"
    ;;
  up)
    p=$1; n=$2
    lock
    # Leftovers of killed runs: bridges tr<pid>-br whose process is gone.
    for br in $(ip -o link show type bridge | sed -nE 's/^[0-9]+: (tr[0-9]+)-br[:@].*/\1/p'); do
      if ! kill -0 "${br#tr}" 2>/dev/null; then
        echo "removing $br-*, left behind by a run that was killed" >&2
        for ns in $(ip netns list | sed -nE "s/^($br-h[0-9]+).*/\1/p"); do
          ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
          ip netns del "$ns" 2>/dev/null || true
        done
        ip link del "$br-br" 2>/dev/null || true
      fi
    done
    routed() { [ -n "$(ip route show to match "$1.1" | grep -v '^default')" ]; }
    if [ -n "${TROUPE_TEST_NET:-}" ]; then
      if routed "$NET"; then
        echo "$NET.0/24 is already routed here ($(ip route show to match "$NET.1" | grep -v '^default' | head -1)); set TROUPE_TEST_NET to a free range" >&2
        exit 1
      fi
    else
      NET=
      for candidate in 198.51.100 203.0.113 192.0.2; do
        if ! routed "$candidate"; then NET=$candidate; break; fi
      done
      if [ -z "$NET" ]; then
        echo "198.51.100.0/24, 203.0.113.0/24 and 192.0.2.0/24 are all routed here; set TROUPE_TEST_NET to a free range" >&2
        exit 1
      fi
    fi
    ip link add "$p-br" type bridge
    ip link set "$p-br" alias "$ALIAS"
    ip addr add "$NET.254/24" dev "$p-br"
    ip link set "$p-br" up
    for i in $(seq 1 "$n"); do
      ip netns add "$p-h$i"
      ip link add "$p-v$i" type veth peer name "$p-b$i"
      ip link set "$p-v$i" netns "$p-h$i"
      ip link set "$p-b$i" master "$p-br"
      ip link set "$p-b$i" up
      ip -n "$p-h$i" addr add "$NET.$i/24" dev "$p-v$i"
      ip -n "$p-h$i" link set "$p-v$i" up
      ip -n "$p-h$i" link set lo up
    done
    # Bridged frames must not be filtered by the host's firewall (see the top).
    # A saved value that is already there belongs to a run still up, or to
    # one that was killed before its `down`: it is the value from before.
    if [ -w "$SYSCTL" ]; then
      [ -e "$SAVED" ] || cat "$SYSCTL" > "$SAVED"
      echo 0 > "$SYSCTL" || true
    fi
    echo "$NET"
    ;;
  cut)
    p=$1; i=$2; j=$3
    ip netns exec "$p-h$i" nft -f - <<NFT
table inet troupe_cut {
  chain in  { type filter hook input  priority 0; ip saddr $NET.$j drop; }
  chain out { type filter hook output priority 0; ip daddr $NET.$j drop; }
}
NFT
    ;;
  heal)
    p=$1; i=$2
    ip netns exec "$p-h$i" nft delete table inet troupe_cut 2>/dev/null || true
    ;;
  reach)
    p=$1; i=$2; j=$3
    rc=0
    out=$(LC_ALL=C ip netns exec "$p-h$i" timeout 3 bash -c "exec 3<>/dev/tcp/$NET.$j/9" 2>&1) || rc=$?
    case "$rc" in
      0) exit 0 ;;  # something listens there: it answered
      124) echo "host $i: no answer from $NET.$j within 3 s"; exit 1 ;;
    esac
    case "$out" in
      *"Connection refused"*) exit 0 ;;  # J's kernel answered with a reset
    esac
    echo "host $i: probing $NET.$j failed (exit $rc): $out"
    exit 2
    ;;
  exec)
    p=$1; i=$2; shift 2
    exec ip netns exec "$p-h$i" "$@"
    ;;
  down)
    p=$1; n=$2
    lock
    for i in $(seq 1 "$n"); do
      ip netns pids "$p-h$i" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
      ip netns del "$p-h$i" 2>/dev/null || true
      ip link del "$p-b$i" 2>/dev/null || true
    done
    ip link del "$p-br" 2>/dev/null || true
    # The last run to go puts the sysctl back as it was before the first.
    if [ -e "$SAVED" ] && [ -z "$(test_bridges)" ]; then
      if [ -w "$SYSCTL" ]; then
        cat "$SAVED" > "$SYSCTL" || true
      fi
      rm -f "$SAVED"
    fi
    ;;
  *)
    echo "unknown command $cmd" >&2; exit 2 ;;
esac
