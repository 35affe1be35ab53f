<?php
// Health probe for sessiongate. It starts no session, so probes leave
// nothing in memcached.
header('Content-Type: text/plain; charset=utf-8');
header('Cache-Control: no-store');
echo "ok\n";
