<?php
// Visit counter: shows which backend answered and that the session,
// stored in memcached, follows the visitor across backends.
declare(strict_types=1);

session_start();
$_SESSION['visits'] = ($_SESSION['visits'] ?? 0) + 1;

$h = static fn ($s): string => htmlspecialchars((string) $s, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8');
$backend = getenv('LAMP_NAME') ?: gethostname();
$sid = session_id();
$short = strlen($sid) > 8 ? substr($sid, 0, 8) . '…' : $sid;
$user = $_SESSION['user'] ?? null;
?>
<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>sessiongate demo</title></head>
<body>
<h1>sessiongate demo</h1>
<p>Served by <strong id="backend"><?= $h($backend) ?></strong></p>
<p>Visits in this session: <strong id="visits"><?= $h($_SESSION['visits']) ?></strong></p>
<p>Session id: <code title="<?= $h($sid) ?>"><?= $h($short) ?></code></p>
<p><?= $user === null ? 'Not logged in.' : 'Logged in as <strong id="user">' . $h($user) . '</strong>.' ?></p>
<p><a href="index.php">Reload</a> · <a href="login.php">Login / logout</a> · <a href="health.php">Health</a></p>
</body>
</html>
