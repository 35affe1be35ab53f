<?php
// Classes for gen.php's fixtures, kept apart so that gen.php can silence
// Serializable's deprecation notice before they compile.

class User
{
    public $id;
    protected $email;
    private $secret;

    public function __construct($id, $email, $secret)
    {
        $this->id = $id;
        $this->email = $email;
        $this->secret = $secret;
    }
}

class Admin extends User
{
    private $level = 3;
}

// Serialized with O: and __serialize's array.
class Token
{
    public function __construct(private string $value) {}

    public function __serialize(): array
    {
        return ['v' => $this->value, 'n' => 1];
    }

    public function __unserialize(array $data): void
    {
        $this->value = $data['v'];
    }
}

// Serialized with C: and a payload of the class's own making.
class Legacy implements Serializable
{
    public function __construct(public string $data) {}

    public function serialize(): string
    {
        return "legacy:" . $this->data;
    }

    public function unserialize($data): void
    {
        $this->data = substr($data, 7);
    }
}

enum Suit: string
{
    case Hearts = 'H';
    case Spades = 'S';
}

enum Status
{
    case Active;
}
