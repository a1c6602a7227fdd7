#!/bin/sh
# BASELINE, NOT SYMROUTE: the usual hand-written workaround, kept here to be
# measured side by side with `symroute daemon` (benches/docker.rs).
#
# It follows `docker events` and, for each started container, enters its
# network namespace with nsenter and adds, per network, a table with a default
# route via that network's gateway and a `from <address>` rule: the commands
# people paste into host scripts. The interface is found by MAC address.
# Its objects carry protocol 116, so they are told apart from symroute's (115).
#
# Usage: DOCKER_HOST=unix:///path/docker.sock baseline-events-nsenter.sh
# (DOCKER=/path/to/docker picks the CLI; default: the first docker in PATH).
set -u
docker=${DOCKER:-docker}
"$docker" events --filter type=container --filter event=start --format '{{.ID}}' |
while read -r id; do
  pid=$("$docker" inspect -f '{{.State.Pid}}' "$id") || continue
  table=100
  "$docker" inspect -f '{{range $n, $e := .NetworkSettings.Networks}}{{$e.IPAddress}} {{$e.IPPrefixLen}} {{$e.Gateway}} {{$e.MacAddress}}
{{end}}' "$id" |
  while read -r ip len gw mac; do
    [ -n "$ip" ] || continue
    dev=$(nsenter -t "$pid" -n ip -o link | grep -i "$mac" | awk -F': ' '{print $2}' | cut -d@ -f1)
    [ -n "$dev" ] || continue
    nsenter -t "$pid" -n ip route add default via "$gw" dev "$dev" table "$table" proto 116
    nsenter -t "$pid" -n ip rule add from "$ip" lookup "$table" priority 3000 protocol 116
    table=$((table + 1))
  done
done
