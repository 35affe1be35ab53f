package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/sessiongate/sessiongate/config"
)

// firewallOptions are the inputs of firewallRules that the config lacks.
type firewallOptions struct {
	// Allow lists extra IPs or CIDRs (sessiongate and PHP hosts) allowed to
	// reach memcached, and the admin port when admin listens beyond loopback.
	Allow []string
}

// runFirewall implements `sessiongate firewall -config FILE [-allow IP]...`:
// it prints an nftables ruleset plus the iptables equivalent. It returns the
// exit code: 0 ok, 1 bad config, 2 bad usage.
func runFirewall(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("firewall", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "config.yaml", "configuration `file`")
	var o firewallOptions
	fs.Func("allow", "sessiongate or PHP host `IP` (or CIDR) allowed to reach memcached and a non-loopback admin port; repeatable", func(s string) error {
		if _, err := config.ParsePrefix(s); err != nil {
			return errors.New("not an IP address or CIDR")
		}
		o.Allow = append(o.Allow, s)
		return nil
	})
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sessiongate firewall [-config FILE] [-allow IP]...")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "firewall: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}
	c, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprint(stdout, firewallRules(c, o))
	return 0
}

// fwPlan is what both renderers print: ports and the peers allowed on them.
type fwPlan struct {
	source    string
	notes     []string       // comments about inputs that could not become rules
	mcPorts   []int          // memcached ports, sorted
	mcPeers   []netip.Prefix // non-loopback peers allowed to reach memcached
	webPort   int
	webAddr   string
	adminPort int // 0: admin listener off
	adminAddr string
	adminOpen bool           // admin listens beyond loopback
	allow     []netip.Prefix // -allow peers
	v6        bool           // an IPv6 address appears somewhere
}

// firewallRules renders an nftables ruleset for c, then the same rules as
// iptables commands in comments so the output still loads with nft -f. The
// chain policy stays accept: only sessiongate's ports are filtered, so an
// admin's ssh session is never cut off. Output is sorted and deterministic.
func firewallRules(c *config.Config, o firewallOptions) string {
	p := planFirewall(c, o)
	var b strings.Builder
	p.nft(&b)
	p.iptables(&b)
	return b.String()
}

func planFirewall(c *config.Config, o firewallOptions) fwPlan {
	p := fwPlan{source: c.File(), webAddr: c.Listen, webPort: portOf(c.Listen), adminAddr: c.Admin.Listen}
	if p.source == "" {
		p.source = "config.yaml"
	}
	addPeer := func(list *[]netip.Prefix, pf netip.Prefix) {
		pf = netip.PrefixFrom(pf.Addr().Unmap().WithZone(""), pf.Bits()).Masked()
		p.v6 = p.v6 || pf.Addr().Is6()
		if !pf.Addr().IsLoopback() { // loopback is accepted as a whole
			*list = append(*list, pf)
		}
	}
	for _, a := range o.Allow {
		pf, err := config.ParsePrefix(a)
		if err != nil {
			p.notes = append(p.notes, fmt.Sprintf("-allow %q is not an IP address or CIDR: ignored.", a))
			continue
		}
		addPeer(&p.allow, pf)
		addPeer(&p.mcPeers, pf)
	}
	for _, be := range c.Backends {
		host := be.URL
		if u, err := url.Parse(be.URL); err == nil {
			host = u.Hostname()
		}
		if a, err := netip.ParseAddr(host); err == nil {
			addPeer(&p.mcPeers, netip.PrefixFrom(a, a.BitLen()))
		} else {
			p.notes = append(p.notes, fmt.Sprintf("backend %s: host %q is a name, not an address; pass its IP with -allow.", be.Name, host))
		}
	}
	for _, s := range c.Memcached.Servers {
		p.mcPorts = append(p.mcPorts, portOf(s))
	}
	if c.Admin.Listen != "" {
		p.adminPort = portOf(c.Admin.Listen)
		host, _, _ := net.SplitHostPort(c.Admin.Listen)
		a, err := netip.ParseAddr(host)
		p.adminOpen = host != "localhost" && (err != nil || !a.IsLoopback())
	}
	for _, hp := range append([]string{c.Listen, c.Admin.Listen}, c.Memcached.Servers...) {
		host, _, _ := net.SplitHostPort(hp)
		if a, err := netip.ParseAddr(host); err == nil && a.Is6() && !a.Is4In6() {
			p.v6 = true
		}
	}
	slices.Sort(p.notes)
	slices.Sort(p.mcPorts)
	p.mcPorts = slices.Compact(p.mcPorts)
	p.mcPeers = sortPrefixes(p.mcPeers)
	p.allow = sortPrefixes(p.allow)
	return p
}

func (p fwPlan) nft(b *strings.Builder) {
	fmt.Fprintf(b, "#!/usr/sbin/nft -f\n")
	fmt.Fprintf(b, "# sessiongate firewall for %s, printed by `sessiongate firewall`.\n", p.source)
	fmt.Fprintf(b, "# Load it on every sessiongate, PHP and memcached host: nft -f FILE\n")
	fmt.Fprintf(b, "# The chain's policy is accept: only the ports below are filtered, so ssh\n")
	fmt.Fprintf(b, "# and everything else keep working. The iptables equivalent follows.\n")
	if len(p.notes) > 0 {
		fmt.Fprintf(b, "#\n")
	}
	for _, n := range p.notes {
		fmt.Fprintf(b, "# NOTE: %s\n", n)
	}
	// Declaring then deleting the table makes reloading this file replace
	// the previous ruleset atomically instead of appending to it.
	fmt.Fprintf(b, "\ntable inet sessiongate\ndelete table inet sessiongate\n\n")
	fmt.Fprintf(b, "table inet sessiongate {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\n")
	fmt.Fprintf(b, "\t\t# loopback: local sessiongate, PHP and admin clients\n\t\tiif \"lo\" accept\n")
	if len(p.mcPorts) > 0 {
		ports := nftSet(p.mcPorts, strconv.Itoa)
		who := "sessiongate and PHP hosts only"
		if len(p.mcPeers) == 0 {
			who = "loopback only (no backend or -allow address beyond loopback)"
		}
		fmt.Fprintf(b, "\n\t\t# memcached (memcached.servers): %s\n", who)
		p.nftAccept(b, p.mcPeers, ports)
		fmt.Fprintf(b, "\t\ttcp dport %s drop\n", ports)
		fmt.Fprintf(b, "\t\tudp dport %s drop\n", ports) // memcached UDP is an amplifier
	}
	fmt.Fprintf(b, "\n\t\t# web (listen %s)\n\t\ttcp dport %d accept\n", p.webAddr, p.webPort)
	if p.adminPort != 0 {
		fmt.Fprintf(b, "\n\t\t# admin (admin.listen %s): %s\n", p.adminAddr, p.adminWho())
		if p.adminOpen {
			p.nftAccept(b, p.allow, strconv.Itoa(p.adminPort))
		}
		fmt.Fprintf(b, "\t\ttcp dport %d drop\n", p.adminPort)
	}
	fmt.Fprintf(b, "\t}\n}\n")
}

func (p fwPlan) nftAccept(b *strings.Builder, peers []netip.Prefix, ports string) {
	for _, fam := range []string{"ip", "ip6"} {
		if set := familyOf(peers, fam == "ip6"); len(set) > 0 {
			fmt.Fprintf(b, "\t\t%s saddr %s tcp dport %s accept\n", fam, nftSet(set, prefixString), ports)
		}
	}
}

func (p fwPlan) adminWho() string {
	switch {
	case !p.adminOpen:
		return "loopback only"
	case len(p.allow) == 0:
		return "loopback only (it listens beyond loopback, but no -allow hosts were given)"
	}
	return "loopback and -allow hosts"
}

func (p fwPlan) iptables(b *strings.Builder) {
	fmt.Fprintf(b, "\n# ---- iptables equivalent, for hosts without nftables ----\n")
	fmt.Fprintf(b, "# Run with: sed -n 's/^# \\(ip6*tables \\)/\\1/p' FILE | sh\n")
	tools := []string{"iptables"}
	if p.v6 {
		tools = append(tools, "ip6tables")
	} else {
		fmt.Fprintf(b, "# No IPv6 address in the config: on dual-stack hosts repeat the DROP rules with ip6tables.\n")
	}
	for _, t := range tools {
		peers := func(list []netip.Prefix) []netip.Prefix { return familyOf(list, t == "ip6tables") }
		r := func(format string, args ...any) {
			fmt.Fprintf(b, "# %s %s\n", t, fmt.Sprintf(format, args...))
		}
		fmt.Fprintf(b, "#\n")
		r("-N SESSIONGATE 2>/dev/null || %s -F SESSIONGATE", t)
		r("-A SESSIONGATE -i lo -j ACCEPT")
		for _, port := range p.mcPorts {
			if l := peers(p.mcPeers); len(l) > 0 {
				r("-A SESSIONGATE -p tcp --dport %d -s %s -j ACCEPT", port, joinPrefixes(l))
			}
			r("-A SESSIONGATE -p tcp --dport %d -j DROP", port)
			r("-A SESSIONGATE -p udp --dport %d -j DROP", port)
		}
		r("-A SESSIONGATE -p tcp --dport %d -j ACCEPT", p.webPort)
		if p.adminPort != 0 {
			if l := peers(p.allow); p.adminOpen && len(l) > 0 {
				r("-A SESSIONGATE -p tcp --dport %d -s %s -j ACCEPT", p.adminPort, joinPrefixes(l))
			}
			r("-A SESSIONGATE -p tcp --dport %d -j DROP", p.adminPort)
		}
		r("-C INPUT -j SESSIONGATE 2>/dev/null || %s -I INPUT -j SESSIONGATE", t)
	}
}

// portOf returns the port of host:port, or 0 if there is none; config
// validation has already rejected anything else.
func portOf(hostport string) int {
	_, port, _ := net.SplitHostPort(hostport)
	n, _ := strconv.Atoi(port)
	return n
}

func sortPrefixes(l []netip.Prefix) []netip.Prefix {
	slices.SortFunc(l, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(l)
}

func familyOf(l []netip.Prefix, v6 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range l {
		if p.Addr().Is6() == v6 {
			out = append(out, p)
		}
	}
	return out
}

func prefixString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

func joinPrefixes(l []netip.Prefix) string {
	s := make([]string, len(l))
	for i, p := range l {
		s[i] = prefixString(p)
	}
	return strings.Join(s, ",")
}

// nftSet renders an anonymous set; a single element goes bare.
func nftSet[T any](l []T, str func(T) string) string {
	s := make([]string, len(l))
	for i, v := range l {
		s[i] = str(v)
	}
	if len(s) == 1 {
		return s[0]
	}
	return "{ " + strings.Join(s, ", ") + " }"
}
