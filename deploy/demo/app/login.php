<?php
// A tiny login: any user name is accepted and kept in the session; logout
// destroys the session (every copy in memcached) and expires the cookie.
declare(strict_types=1);

session_start();
$h = static fn ($s): string => htmlspecialchars((string) $s, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8');

if ($_SERVER['REQUEST_METHOD'] === 'POST') {
    if (($_POST['action'] ?? '') === 'logout') {
        $_SESSION = [];
        session_destroy();
        $p = session_get_cookie_params();
        setcookie(session_name(), '', [
            'expires' => 1, 'path' => $p['path'], 'domain' => $p['domain'],
            'secure' => $p['secure'], 'httponly' => $p['httponly'], 'samesite' => $p['samesite'],
        ]);
    } elseif (trim($_POST['user'] ?? '') !== '') {
        session_regenerate_id(true); // a new id on login: no session fixation
        $_SESSION['user'] = substr(trim($_POST['user']), 0, 64);
    }
    header('Location: login.php', true, 303);
    exit;
}
$user = $_SESSION['user'] ?? null;
$backend = getenv('LAMP_NAME') ?: gethostname();
?>
<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>sessiongate demo: login</title></head>
<body>
<h1>Login</h1>
<p>Served by <strong id="backend"><?= $h($backend) ?></strong></p>
<?php if ($user === null): ?>
<form method="post" action="login.php">
  <label>User name <input name="user" maxlength="64" required autofocus></label>
  <button type="submit">Log in</button>
</form>
<?php else: ?>
<p>Logged in as <strong id="user"><?= $h($user) ?></strong>.</p>
<form method="post" action="login.php">
  <button type="submit" name="action" value="logout">Log out</button>
</form>
<?php endif; ?>
<p><a href="index.php">Visit counter</a></p>
</body>
</html>
