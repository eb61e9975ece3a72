#!/usr/bin/env bash
# Generates the configs of a fleet: two control replicas (each runs `wgagent control`) and N
# agents behind NAT that dial both replicas. Every node gets a fresh key.
#
#   deploy/fleet/generate.sh N OUTDIR [CONTROL_1_HOST] [CONTROL_2_HOST]
#
# Writes OUTDIR/control-1.toml, control-2.toml and agent-1.toml .. agent-N.toml (mode 0600; the
# private keys are inline: copy each file to its machine only). Tunnel addresses: replicas
# 100.64.0.1 and .2, agents 100.64.1.1 .. (up to 100.64.255.254). The replicas' UDP port 51820
# must be reachable from the agents; the agents need no open port.
#
# Uses `wgagent genkey`/`pubkey` ($WGAGENT, else `wgagent` on $PATH).
set -euo pipefail
n=${1:?usage: generate.sh N OUTDIR [CONTROL_1_HOST] [CONTROL_2_HOST]}
out=${2:?usage: generate.sh N OUTDIR [CONTROL_1_HOST] [CONTROL_2_HOST]}
host1=${3:-control-1.example.net}
host2=${4:-control-2.example.net}
wgagent=${WGAGENT:-wgagent}
if ! [[ $n =~ ^[0-9]+$ ]] || ((n < 1 || n > 64770)); then
  echo "N must be 1..64770" >&2
  exit 2
fi
mkdir -p "$out"
umask 077

declare -a priv pub
key() { # name -> sets k_priv, k_pub
  k_priv=$("$wgagent" genkey)
  k_pub=$(printf '%s\n' "$k_priv" | "$wgagent" pubkey)
}
key; c1_priv=$k_priv; c1_pub=$k_pub
key; c2_priv=$k_priv; c2_pub=$k_pub
for ((i = 1; i <= n; i++)); do
  key; priv[i]=$k_priv; pub[i]=$k_pub
done

agent_ip() { # 1-based index -> 100.64.X.Y, skipping .0 and .255
  local j=$(($1 - 1))
  echo "100.64.$((1 + j / 254)).$((1 + j % 254))"
}

for r in 1 2; do
  if ((r == 1)); then p=$c1_priv; else p=$c2_priv; fi
  {
    echo "# Control replica control-$r of a generated fleet ($n agents). Run: wgagent control --config control-$r.toml"
    echo "[interface]"
    echo "private_key = \"$p\""
    echo "address = [\"100.64.0.$r\"]"
    echo "listen_port = 51820"
    echo
    echo "[control]"
    echo "socket = \"/run/wgagent/control.sock\""
    echo "socket_group = \"wgagent\""
    for ((i = 1; i <= n; i++)); do
      echo
      echo "[[peer]]"
      echo "name = \"agent-$i\""
      echo "public_key = \"${pub[i]}\""
      echo "allowed_ips = [\"$(agent_ip "$i")/32\"]"
    done
  } > "$out/control-$r.toml"
done

for ((i = 1; i <= n; i++)); do
  cat > "$out/agent-$i.toml" <<CONF
# Agent agent-$i of a generated fleet. Run: wgagent agent --config agent-$i.toml
[interface]
private_key = "${priv[i]}"
address = ["$(agent_ip "$i")"]

[[peer]]
name = "control-1"
public_key = "$c1_pub"
allowed_ips = ["100.64.0.1/32"]
endpoint = "$host1:51820"
persistent_keepalive = 25

[[peer]]
name = "control-2"
public_key = "$c2_pub"
allowed_ips = ["100.64.0.2/32"]
endpoint = "$host2:51820"
persistent_keepalive = 25
CONF
done
echo "wrote $out: control-1.toml control-2.toml agent-1.toml .. agent-$n.toml"
