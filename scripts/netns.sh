#!/usr/bin/env bash
# Test hosts in network namespaces, for the multi-host tests.
#
#   netns.sh up   PREFIX N      N namespaces PREFIX-h1..hN, each with a veth into a
#                               bridge PREFIX-br in the calling namespace;
#                               host i is $NET.i/24, the bridge $NET.254/24
#
# NET defaults to 198.51.100 (TEST-NET-2, a documentation range). `up` refuses
# to run if the calling namespace already routes that range anywhere (some
# machines use TEST-NET-1 for their own uplink), so test traffic can never
# leave the machine.
#   netns.sh cut  PREFIX I J    drop all traffic between hosts I and J (nftables in host I)
#   netns.sh heal PREFIX I      remove host I's drop rules
#   netns.sh exec PREFIX I CMD  run CMD inside host I
#   netns.sh down PREFIX N      remove everything `up` created
#   netns.sh check              exit 0 if namespaces can be created here
set -euo pipefail
NET=${TROUPE_TEST_NET:-198.51.100}

cmd=${1:?usage: netns.sh up|cut|heal|exec|down|check ...}
shift

case "$cmd" in
  check)
    [ "$(id -u)" = 0 ] || { echo "not root"; exit 1; }
    command -v ip >/dev/null || { echo "ip (iproute2) not installed"; exit 1; }
    probe="troupe-probe-$$"
    ip netns add "$probe" 2>/dev/null || { echo "ip netns add is not permitted here"; exit 1; }
    ip netns del "$probe"
    ;;
  up)
    p=$1; n=$2
    if [ -n "$(ip route show to match "$NET.1" | grep -v '^default')" ]; then
      echo "$NET.0/24 is already routed here ($(ip route show to match "$NET.1" | grep -v '^default' | head -1)); set TROUPE_TEST_NET to a free range" >&2
      exit 1
    fi
    ip link add "$p-br" type bridge
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
    # Bridged frames must not be filtered by the host's firewall (e.g. Docker's
    # FORWARD DROP policy applies to bridges when br_netfilter is loaded).
    if [ -w /proc/sys/net/bridge/bridge-nf-call-iptables ]; then
      echo 0 > /proc/sys/net/bridge/bridge-nf-call-iptables || true
    fi
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
  exec)
    p=$1; i=$2; shift 2
    exec ip netns exec "$p-h$i" "$@"
    ;;
  down)
    p=$1; n=$2
    for i in $(seq 1 "$n"); do
      ip netns pids "$p-h$i" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
      ip netns del "$p-h$i" 2>/dev/null || true
      ip link del "$p-b$i" 2>/dev/null || true
    done
    ip link del "$p-br" 2>/dev/null || true
    ;;
  *)
    echo "unknown command $cmd" >&2; exit 2 ;;
esac
