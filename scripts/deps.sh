#!/bin/sh
# Install the Debian packages Postern needs to build, run and test.
# Usage: scripts/deps.sh [run|check|bench]
# Only packages that are missing are installed; nothing is fetched from
# anywhere but Debian's archive.
set -eu
what=${1:-run}

pkgs="build-essential cmake pkg-config libevent-dev libssl-dev libsqlite3-dev
      libcrypt-dev libargon2-dev libjansson-dev libunbound-dev dns-root-data openssl zlib1g-dev
      libpsl-dev publicsuffix libidn2-dev"
case "$what" in
check) pkgs="$pkgs libcmocka-dev libyaml-dev clang libclang-rt-14-dev python3 python3-pytest swaks nsd ldnsutils python3-dkim python3-aiosmtpd fetchmail isync postfix" ;;
bench) pkgs="$pkgs libcmocka-dev python3 postfix gnuplot-nox dovecot-imapd dovecot-pop3d" ;;
esac

missing=""
for p in $pkgs; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

echo "postern: installing missing Debian packages:$missing" >&2
if [ "$(id -u)" -eq 0 ]; then
	sudo=""
elif command -v sudo >/dev/null 2>&1; then
	sudo="sudo"
else
	echo "postern: need root or sudo to install:$missing" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Postfix is a test peer run privately (tests/test_postfix_peer.py): no system instance configured
case " $missing " in
*" postfix "*) echo "postfix postfix/main_mailer_type select No configuration" |
	$sudo debconf-set-selections ;;
esac
# Refresh the package lists only when an install fails with the cached ones.
$sudo apt-get install -y -q --no-install-recommends $missing ||
	{ $sudo apt-get update -q && $sudo apt-get install -y -q --no-install-recommends $missing; }
