#!/usr/bin/env bash
# Installs the Debian packages a make target needs, only those missing.
# usage: scripts/deps.sh test|demo|bench
set -euo pipefail

want=()
need() { # need PACKAGE CHECK-COMMAND...
	local pkg=$1; shift
	if ! "$@" >/dev/null 2>&1; then want+=("$pkg"); fi
}
php_mod() { command -v php >/dev/null && php -m 2>/dev/null | grep -qx "$1"; }

case "${1:-test}" in
test)
	need memcached command -v memcached
	need php-cli command -v php
	need php-memcache php_mod memcache
	need php-memcached php_mod memcached
	need chromium command -v chromium
	need nftables command -v nft
	;;
demo)
	need memcached command -v memcached
	need php-cli command -v php
	need php-memcache php_mod memcache
	;;
bench)
	need memcached command -v memcached
	need haproxy command -v haproxy
	need nginx-light command -v nginx
	need caddy command -v caddy
	need wrk command -v wrk
	;;
*)
	echo "usage: $0 test|demo|bench" >&2
	exit 2
	;;
esac

[ ${#want[@]} -eq 0 ] && exit 0

echo "installing: ${want[*]}" >&2
sudo=()
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null; then sudo=(sudo); else
		echo "missing Debian packages: ${want[*]}" >&2
		echo "install them as root: apt-get install -y ${want[*]}" >&2
		exit 1
	fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${want[@]}"; } >&2; then
	echo "could not install: ${want[*]}; run: apt-get install -y ${want[*]}" >&2
	exit 1
fi
