// Package deploy holds no code: it is the directory of files that put
// sessiongate in front of a farm — the local demo farm (demo/), a hardened
// systemd unit, container and Kubernetes files, and the php.ini snippets
// that match sessiongate's defaults (php/). Its tests check that those
// files parse, agree with each other and with the config schema, and that
// the demo runs.
package deploy
