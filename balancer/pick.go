package balancer

// Policy names.
const (
	RoundRobin         = "round_robin"          // each available backend in turn (the default)
	WeightedRoundRobin = "weighted_round_robin" // smooth weighted round robin, as nginx does it
	LeastConn          = "least_conn"           // fewest in-flight requests, random tie-break
	P2C                = "p2c"                  // power of two choices: the less loaded of two random backends
	Random             = "random"               // uniformly random
)

// Policies returns the valid policy names.
func Policies() []string {
	return []string{RoundRobin, WeightedRoundRobin, LeastConn, P2C, Random}
}

// MinShare is the fraction of its full share of new requests that a
// backend gets when its slow start begins; it grows linearly to 1 over the
// slow-start time (as Envoy's min_weight_percent 10 and linear aggression).
const MinShare = 0.1

// Pick returns an available backend (healthy and AdminEnabled) that is not in
// tried, or nil when there is none. tried holds the backends a retry has
// already used. Pick takes no lock and does not allocate.
func (p *Pool) Pick(tried []*Backend) *Backend {
	s := p.snap.Load()
	n := uint64(len(s.avail))
	if n == 0 {
		return nil
	}
	if s.warmUntil != 0 {
		if now := p.now(); now < s.warmUntil {
			return p.pickWarming(s, tried, now)
		}
	}
	var i uint64
	switch s.policy {
	case LeastConn:
		return p.leastConn(s.avail, tried, nil)
	case P2C:
		return p.p2c(s.avail, tried, nil)
	case Random:
		i = p.rand() % n
	case WeightedRoundRobin:
		i = uint64(s.cycle[(p.next.Add(1)-1)%uint64(len(s.cycle))])
	default:
		i = (p.next.Add(1) - 1) % n
	}
	return untried(s.avail, int(i), tried)
}

// share is the fraction of its full share b gets at now: below 1 while it
// ramps up after becoming available (slow start).
func (s *snapshot) share(b *Backend, now int64) float64 {
	since := b.st.warmSince.Load()
	if since == 0 || s.slowStart <= 0 || now >= since+int64(s.slowStart) {
		return 1
	}
	return max(MinShare, float64(now-since)/float64(s.slowStart))
}

// pickWarming is Pick while some backend ramps up. The rotating policies
// (round robin, weighted round robin, random) draw at random in proportion
// to each backend's weight (1 but for weighted_round_robin) times its
// share: exact rotation resumes when the ramp ends. least_conn and p2c pick
// by load as always, then keep a ramping backend with probability its
// share, else pick again without it, so an idle cold backend is not handed
// every request.
func (p *Pool) pickWarming(s *snapshot, tried []*Backend, now int64) *Backend {
	byLoad := func(skip *Backend) *Backend {
		if s.policy == LeastConn {
			return p.leastConn(s.avail, tried, skip)
		}
		return p.p2c(s.avail, tried, skip)
	}
	switch s.policy {
	case LeastConn, P2C:
		b := byLoad(nil)
		if b != nil && p.uniform() >= s.share(b, now) {
			if alt := byLoad(b); alt != nil {
				return alt
			}
		}
		return b
	}
	var total float64
	for _, b := range s.avail {
		if !contains(tried, b) {
			total += s.weight(b) * s.share(b, now)
		}
	}
	x := p.uniform() * total
	var last *Backend
	for _, b := range s.avail {
		if contains(tried, b) {
			continue
		}
		last = b
		if x -= s.weight(b) * s.share(b, now); x < 0 {
			return b
		}
	}
	return last // rounding left x at 0
}

// weight is b's weight under the snapshot's policy.
func (s *snapshot) weight(b *Backend) float64 {
	if s.policy == WeightedRoundRobin {
		return float64(b.Weight)
	}
	return 1
}

// uniform returns a random float64 in [0, 1).
func (p *Pool) uniform() float64 { return float64(p.rand()>>11) / (1 << 53) }

// PickEnabled returns the admin-enabled backend not in tried with the
// fewest requests in flight, whatever its health, or nil. It is the last
// resort when health checks have taken every backend out but may be wrong
// (PHP too busy to answer probes in time still serves, slowly). Drained and
// maintenance backends stay out: the operator took them out on purpose.
func (p *Pool) PickEnabled(tried []*Backend) *Backend {
	var best *Backend
	for _, b := range p.snap.Load().all {
		if b.Admin() == AdminEnabled && !contains(tried, b) && (best == nil || b.InFlight() < best.InFlight()) {
			best = b
		}
	}
	return best
}

// untried returns the first backend of avail, from index start and wrapping
// around, that is not in tried.
func untried(avail []*Backend, start int, tried []*Backend) *Backend {
	for k := range avail {
		if b := avail[(start+k)%len(avail)]; !contains(tried, b) {
			return b
		}
	}
	return nil
}

func contains(bs []*Backend, b *Backend) bool {
	for _, x := range bs {
		if x == b {
			return true
		}
	}
	return false
}

// leastConn returns the untried backend with the fewest requests in flight.
// Scanning from a random start and keeping the first strict minimum breaks
// ties with one random draw: uniformly when the tied backends are adjacent
// (all idle, say), otherwise in proportion to the gap before each. Reservoir
// sampling would be uniform always but costs a draw per tie: 845 ns instead of
// 125 ns per pick over 64 idle backends in BenchmarkPick.
// skip, if not nil, is left out like the tried ones.
func (p *Pool) leastConn(avail, tried []*Backend, skip *Backend) *Backend {
	n := len(avail)
	i := int(p.rand() % uint64(n))
	var best *Backend
	var least int64
	for range n {
		if b := avail[i]; b != skip && !contains(tried, b) {
			if f := b.InFlight(); best == nil || f < least {
				best, least = b, f
			}
		}
		if i++; i == n {
			i = 0
		}
	}
	return best
}

// p2c compares two distinct random backends and returns the one with fewer
// requests in flight (the first drawn on a tie). A tried candidate yields to
// the other; when both were tried it falls back to the next untried backend.
// skip, if not nil, is left out like the tried ones.
func (p *Pool) p2c(avail, tried []*Backend, skip *Backend) *Backend {
	n := uint64(len(avail))
	if n == 1 {
		if avail[0] == skip {
			return nil
		}
		return untried(avail, 0, tried)
	}
	i := p.rand() % n
	j := p.rand() % (n - 1)
	if j >= i {
		j++
	}
	a, b := avail[i], avail[j]
	switch ta, tb := a == skip || contains(tried, a), b == skip || contains(tried, b); {
	case ta && tb:
		for k := range avail { // the next backend neither tried nor skipped
			if c := avail[(int(i)+k)%len(avail)]; c != skip && !contains(tried, c) {
				return c
			}
		}
		return nil
	case ta:
		return b
	case tb:
		return a
	}
	if b.InFlight() < a.InFlight() {
		return b
	}
	return a
}

// maxCycle bounds the precomputed weighted round-robin cycle. A cycle is
// sum(weights)/gcd(weights) picks long; when that exceeds maxCycle, the weights
// are scaled to sum to about maxCycle (each at least 1), so shares are then
// exact only to within about 1/maxCycle of the traffic. With MaxWeight 1000
// this keeps any four backends exact. Building costs len(cycle)*len(avail)
// steps, paid only when availability or the backend set changes.
const maxCycle = 4096

// smoothCycle returns one full cycle of nginx's smooth weighted round robin
// over avail, as indices into avail: every step each backend's current value
// grows by its weight, the largest (first on a tie) is chosen and loses the
// total. Weights 5,1,1 give a a b a c a a, not a a a a a b c.
func smoothCycle(avail []*Backend) []int32 {
	if len(avail) == 0 {
		return nil
	}
	w := make([]int, len(avail))
	for i, b := range avail {
		w[i] = b.Weight
	}
	sum := reduce(w)
	if sum > maxCycle {
		for i := range w {
			w[i] = max(1, (w[i]*maxCycle+sum/2)/sum)
		}
		sum = reduce(w)
	}
	cycle := make([]int32, sum)
	cur := make([]int, len(w))
	for k := range cycle {
		best := 0
		for i := range w {
			cur[i] += w[i]
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= sum
		cycle[k] = int32(best)
	}
	return cycle
}

// reduce divides the weights by their greatest common divisor and returns their sum.
func reduce(w []int) int {
	g := 0
	for _, x := range w {
		for x != 0 {
			g, x = x, g%x
		}
	}
	sum := 0
	for i := range w {
		w[i] /= g
		sum += w[i]
	}
	return sum
}
