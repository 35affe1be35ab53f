<?php
// Reads base64 session values, one a line, on stdin and prints for each
// whether PHP's own session_decode() accepts it with the serializer given as
// argv[1]: "ok" or "fail", one a line. Used by TestAcceptsWhatPHPAccepts.

error_reporting(E_ALL & ~E_DEPRECATED);
require __DIR__ . '/classes.php'; // so that enums such as Suit::Hearts exist

class NoStore implements SessionHandlerInterface
{
    public function open($path, $name): bool { return true; }
    public function close(): bool { return true; }
    public function read($id): string { return ''; }
    public function write($id, $data): bool { return true; }
    public function destroy($id): bool { return true; }
    public function gc($max): int { return 0; }
}
ini_set('session.use_cookies', '0');
ini_set('session.cache_limiter', '');
ini_set('session.serialize_handler', $argv[1]);
session_set_save_handler(new NoStore, false);
session_start();
$out = [];
while (($line = fgets(STDIN)) !== false) {
    $_SESSION = [];
    $out[] = @session_decode(base64_decode(trim($line))) ? 'ok' : 'fail';
    if (session_status() !== PHP_SESSION_ACTIVE) {
        session_start(); // a failed decode destroys the session
    }
}
session_abort();
echo implode("\n", $out), "\n"; // only now: output would stop session_start
