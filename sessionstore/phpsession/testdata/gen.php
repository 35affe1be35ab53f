<?php
// Writes the decoder's fixtures: for each of PHP's session serializers (php,
// php_serialize, php_binary), fixtures/<serializer>.json lists cases, each
// with the session exactly as PHP's session_encode() writes it (base64) and
// the JSON the Go decoder must give for it, derived here from the PHP values
// (references by hand: PHP cannot tell a reference from a copy afterwards).
//
//   php sessionstore/phpsession/testdata/gen.php [outdir]
//
// outdir defaults to fixtures/ next to this script; the Go test runs it into a
// temporary directory and checks that the checked-in files are what PHP writes.

error_reporting(E_ALL & ~E_DEPRECATED); // Legacy implements Serializable on purpose
set_error_handler(function ($no, $msg) { fwrite(STDERR, "gen.php: $msg\n"); exit(1); }, E_ALL & ~E_DEPRECATED);
require __DIR__ . '/classes.php';

$outdir = $argv[1] ?? __DIR__ . '/fixtures';

// The JSON shape phpsession.Decode gives for a PHP value (see value.go).
function expect($v)
{
    if (is_string($v)) {
        return preg_match('//u', $v) ? $v : ['base64' => base64_encode($v)];
    }
    if (is_float($v)) {
        if (is_nan($v)) return ['float' => 'NAN'];
        if (is_infinite($v)) return ['float' => $v > 0 ? 'INF' : '-INF'];
        return $v;
    }
    if (is_array($v)) {
        $out = [];
        foreach ($v as $k => $e) $out[$k] = expect($e);
        return array_is_list($v) ? $out : (object)$out;
    }
    if ($v instanceof UnitEnum) {
        return ['enum' => get_class($v) . '::' . $v->name];
    }
    if (is_object($v)) {
        if (method_exists($v, '__serialize')) {
            $props = $v->__serialize();
        } elseif ($v instanceof Serializable) {
            return ['class' => get_class($v), 'custom' => expect($v->serialize())];
        } else {
            $props = [];
            foreach ((array)$v as $k => $e) {
                // Mangled names: "\0*\0name" protected, "\0Class\0name" private.
                $parts = explode("\0", (string)$k);
                if (count($parts) === 3) {
                    $k = $parts[1] === '*' ? "$parts[2]:protected" : "$parts[2]:$parts[1]:private";
                }
                $props[$k] = $e;
            }
        }
        $out = [];
        foreach ($props as $k => $e) $out[$k] = expect($e);
        return ['class' => get_class($v), 'properties' => (object)$out];
    }
    return $v; // int, bool, null
}

// Each case: a function filling $_SESSION, and for references the expected
// JSON written out by hand.
$cases = [
    'empty' => [fn() => null],
    'scalars' => [function () {
        $_SESSION['int'] = 42;
        $_SESSION['negative'] = -7;
        $_SESSION['int_max'] = PHP_INT_MAX;
        $_SESSION['int_min'] = PHP_INT_MIN;
        $_SESSION['true'] = true;
        $_SESSION['false'] = false;
        $_SESSION['null'] = null;
    }],
    'floats' => [function () {
        $_SESSION['tenth'] = 0.1;
        $_SESSION['big'] = 1e25;
        $_SESSION['small'] = -1.5e-300;
        $_SESSION['whole'] = 2.0;
        $_SESSION['negative_zero'] = -0.0;
        $_SESSION['inf'] = INF;
        $_SESSION['minus_inf'] = -INF;
        $_SESSION['nan'] = NAN;
    }],
    'strings' => [function () {
        $_SESSION['empty'] = '';
        $_SESSION['ascii'] = 'hello';
        $_SESSION['unicode'] = "héllo ✓ 日本 🎉";
        $_SESSION['syntax'] = "a|b\"c;d:{}\n\t\\";
        $_SESSION['binary'] = "\xff\x00\x01\xfe";
        $_SESSION['nul_inside'] = "a\0b";
        $_SESSION['long'] = str_repeat('0123456789', 300);
    }],
    'arrays' => [function () {
        $_SESSION['list'] = [1, 'two', 3.5, null];
        $_SESSION['assoc'] = ['b' => 1, 'a' => 2];
        $_SESSION['mixed_keys'] = [5 => 'five', 'x' => 'ex', -1 => 'minus', '' => 'empty key'];
        $_SESSION['gaps'] = [0 => 'a', 2 => 'c'];
        $_SESSION['empty'] = [];
        $d = 'bottom';
        for ($i = 0; $i < 20; $i++) $d = ['level' . $i => $d];
        $_SESSION['deep'] = $d;
    }],
    'objects' => [function () {
        $o = new stdClass;
        $o->name = 'std';
        $o->tags = ['a', 'b'];
        $_SESSION['std'] = $o;
        $_SESSION['empty_object'] = new stdClass;
        $_SESSION['user'] = new User(7, 'u@example.com', 's3cret');
        $_SESSION['admin'] = new Admin(1, 'root@example.com', 'hunter2');
        $_SESSION['in_array'] = ['owner' => new User(8, null, "\xff")];
    }],
    'custom' => [function () {
        $_SESSION['token'] = new Token('abc');
        $_SESSION['legacy'] = new Legacy('x|y;"z"');
    }],
    'enums' => [function () {
        $_SESSION['suit'] = Suit::Hearts;
        $_SESSION['status'] = Status::Active;
        $_SESSION['suits'] = [Suit::Spades, Suit::Hearts];
    }],
    'references' => [function () {
        $list = [1, 2];
        $_SESSION['x'] = &$list;
        $_SESSION['y'] = &$list;
        $s = 'shared';
        $_SESSION['s1'] = &$s;
        $_SESSION['s2'] = &$s;
        $o = new stdClass;
        $o->name = 'o';
        $o->self = $o;
        $_SESSION['o'] = $o;
        $_SESSION['o2'] = $o;
        $_SESSION['cart'] = ['items' => [1, 2]];
        $_SESSION['last'] = &$_SESSION['cart']['items'];
    }, [
        'x' => [1, 2],
        'y' => ['ref' => 'x'],
        's1' => 'shared',
        's2' => 'shared',
        'o' => ['class' => 'stdClass', 'properties' => ['name' => 'o', 'self' => ['ref' => 'o']]],
        'o2' => ['ref' => 'o'],
        'cart' => ['items' => [1, 2]],
        'last' => ['ref' => 'cart.items'],
    ]],
    'logged_in' => [function () {
        $_SESSION['user'] = 42;
        $_SESSION['auth'] = ['user' => ['id' => 'u-42', 'roles' => ['admin']], 'at' => 1765000000];
        $_SESSION['visit'] = 3;
    }],
];

// An in-memory save handler: session_encode() needs an active session, and
// nothing should touch the disk.
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
ini_set('session.use_strict_mode', '0');
session_set_save_handler(new NoStore, false);

foreach (['php', 'php_serialize', 'php_binary'] as $serializer) {
    ini_set('session.serialize_handler', $serializer);
    $out = [];
    foreach ($cases as $name => $case) {
        session_id('fixture');
        session_start();
        $case[0]();
        $encoded = session_encode();
        $expected = $case[1] ?? array_map('expect', $_SESSION);
        session_abort();
        $out[] = ['name' => $name, 'encoded' => base64_encode($encoded), 'expected' => (object)$expected];
    }
    $json = json_encode($out, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_PRESERVE_ZERO_FRACTION | JSON_THROW_ON_ERROR);
    file_put_contents("$outdir/$serializer.json", $json . "\n");
}
