#!/bin/sh
# A private authoritative DNS server (NSD, Debian package nsd) for tests.
#
#   testdns.sh start RUNDIR PORT [ZONEDIR]   serve every ZONEDIR/<zone>.zone on 127.0.0.1:PORT
#                                            (ZONEDIR defaults to tests/dns/zones); returns once
#                                            the server answers, non-zero if it did not start
#   testdns.sh stop RUNDIR                   stop it and wait until it is gone
#   testdns.sh run RUNDIR PORT [ZONEDIR]     the same server in the foreground (exec), for a
#                                            parent that stops it with SIGTERM (test-dns.c)
#   testdns.sh wait PORT ZONE                wait (at most 10 s) until it answers for ZONE
#   testdns.sh sign ZONEFILE ORIGIN OUTDIR   DNSSEC-sign ZONEFILE with a fresh Ed25519 key
#                                            (ldnsutils) into OUTDIR/ORIGIN.zone and write the
#                                            key's DS to OUTDIR/ORIGIN.ds (a trust anchor file);
#                                            the A record of every name starting with "bad." is
#                                            changed after signing, so it validates as bogus
#
# RUNDIR holds nsd.conf, nsd.pid and nsd.log. The server does not recurse:
# point Postern at it with `[dns] resolver = 127.0.0.1:PORT`.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
cmd=${1:-}
rundir=${2:-}
[ -n "$cmd" ] && [ -n "$rundir" ] || { echo "usage: $0 start RUNDIR PORT [ZONEDIR] | stop RUNDIR" >&2; exit 2; }

nsd=$(command -v nsd || echo /usr/sbin/nsd)

wait_ready() {
	/usr/bin/python3 - "$1" "$2" <<'PY'
import socket, struct, sys, time
port, zone = int(sys.argv[1]), sys.argv[2]
q = struct.pack(">HHHHHH", 0x5050, 0, 1, 0, 0, 0)
for label in zone.rstrip(".").split("."):
    q += bytes([len(label)]) + label.encode()
q += b"\0" + struct.pack(">HH", 6, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.2)
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    try:
        s.sendto(q, ("127.0.0.1", port))
        r, _ = s.recvfrom(4096)
        if r[:2] == q[:2] and (r[3] & 0xF) == 0:
            sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit("testdns: nsd did not answer on 127.0.0.1:%d" % port)
PY
}

case "$cmd" in
sign)
	src=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
	origin=${3:?origin}
	mkdir -p "${4:?outdir}"
	out=$(cd "$4" && pwd)
	command -v ldns-signzone >/dev/null || { echo "testdns: ldns-signzone missing (apt-get install ldnsutils)" >&2; exit 1; }
	work=$(mktemp -d "$out/sign.XXXXXX")
	(
		cd "$work"
		key=$(ldns-keygen -a ED25519 -k "$origin")
		ldns-signzone -f signed.zone "$src" "$key"
		awk -v OFS='\t' '$1 ~ /^bad\./ && $4 == "A" { $5 = "192.0.2.99" } { print }' \
			signed.zone >"$out/$origin.zone"
		cp "$key.ds" "$out/$origin.ds"
	)
	rm -rf "$work"
	;;
wait)
	wait_ready "$2" "${3:?zone}"
	;;
start | run)
	port=${3:?port}
	zonedir=$(cd "${4:-$here/zones}" && pwd)
	[ -x "$nsd" ] || { echo "testdns: nsd is not installed (apt-get install nsd)" >&2; exit 1; }
	mkdir -p "$rundir"
	rundir=$(cd "$rundir" && pwd)
	conf=$rundir/nsd.conf
	cat >"$conf" <<CONF
server:
	ip-address: 127.0.0.1
	port: $port
	do-ip6: no
	server-count: 1
	username: ""
	chroot: ""
	zonesdir: "$zonedir"
	database: ""
	zonelistfile: "$rundir/zone.list"
	xfrdfile: "$rundir/xfrd.state"
	xfrdir: "$rundir"
	pidfile: "$rundir/nsd.pid"
	logfile: "$rundir/nsd.log"
	hide-version: yes
	verbosity: 1
remote-control:
	control-enable: no
CONF
	first=""
	for z in "$zonedir"/*.zone; do
		[ -e "$z" ] || continue
		name=$(basename "$z" .zone)
		[ -n "$first" ] || first=$name
		printf 'zone:\n\tname: "%s"\n\tzonefile: "%s"\n' "$name" "$z" >>"$conf"
	done
	[ -n "$first" ] || { echo "testdns: no *.zone in $zonedir" >&2; exit 1; }
	if [ "$cmd" = run ]; then
		exec "$nsd" -d -c "$conf" -P "$rundir/nsd.pid"
	fi
	"$nsd" -c "$conf" -P "$rundir/nsd.pid"
	wait_ready "$port" "$first"
	;;
stop)
	pidfile=$rundir/nsd.pid
	[ -f "$pidfile" ] || exit 0
	pid=$(cat "$pidfile")
	kill "$pid" 2>/dev/null || true
	i=0
	while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
		sleep 0.05
		i=$((i + 1))
	done
	kill -9 "$pid" 2>/dev/null || true
	rm -f "$pidfile"
	;;
*)
	echo "usage: $0 start|run RUNDIR PORT [ZONEDIR] | stop RUNDIR | wait PORT ZONE" >&2
	exit 2
	;;
esac
