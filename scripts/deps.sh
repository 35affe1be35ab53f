#!/usr/bin/env bash
# Installs the Debian packages a make target needs, only those missing.
# usage: scripts/deps.sh test|demo|bench
set -euo pipefail

want=()
need() { # need PACKAGE CHECK-COMMAND...
	local pkg=$1; shift
	if ! "$@" >/dev/null 2>&1; then want+=("$pkg"); fi
}
# Not grep -q: exiting at the first match can kill php -m with SIGPIPE, and
# pipefail then reports the module missing.
php_mod() { command -v php >/dev/null && php -m 2>/dev/null | grep -x "$1" >/dev/null; }

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
	need nghttp2-client command -v h2load
	;;
*)
	echo "usage: $0 test|demo|bench" >&2
	exit 2
	;;
esac

# promtool (to check /metrics) comes from Debian's prometheus package, but
# installing that package would start a Prometheus server on :9090 on a
# systemd machine; take just the binary out of the .deb instead.
promtool_tool() {
	local dir=$1 tmp
	command -v promtool >/dev/null && return 0
	[ -x "$dir/promtool" ] && return 0
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' RETURN
	echo "fetching promtool from Debian's prometheus package into $dir" >&2
	if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) ||
		! dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"; then
		echo "could not fetch promtool; run: apt-get download prometheus && dpkg-deb -x prometheus_*.deb x && cp x/usr/bin/promtool $dir/" >&2
		return 1
	fi
	mkdir -p "$dir"
	cp "$tmp/x/usr/bin/promtool" "$dir/promtool"
}

if [ "${1:-test}" = test ]; then
	promtool_tool "$(cd "$(dirname "$0")/.." && pwd)/.tools/bin"
fi

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
