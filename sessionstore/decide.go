package sessionstore

// nodeObs is what one lookup saw on one node.
type nodeObs struct {
	Answered bool // the node answered the lookup (it was not known down and did not fail)
	Data     bool // the data key exists
	Empty    bool // the data key exists with an empty value
	LockKey  bool // the lock key exists, whatever its value
	Locked   bool // the lock is held: memcache value >= 1, memcached key exists
}

// decision is what to do about one session after a lookup.
type decision struct {
	Verdict Verdict
	Repair  []int // nodes to copy the data onto (Verdict Repaired)
	Sources []int // nodes holding the data (the copy candidates)
	Locked  bool  // some node reports the lock held
	Empty   bool  // every copy found is empty
	// Cacheable: every node answered and the session needs nothing more, so the
	// verification may be reused (after the repair succeeds, for Repaired).
	Cacheable bool
}

// decide turns per-node observations into a verdict and repair targets. It is pure so
// the rules can be table-tested:
//   - nobody answered: StoreDown (fail open);
//   - data somewhere: Verified; with replicas=all, answered nodes that lack it are
//     repaired unless a PHP request holds the lock (PHP rewrites every copy itself);
//   - no data but a lock key somewhere: a session being created, Verified;
//   - nothing anywhere: Unknown (Adopted when not strict), except that a sharded
//     pool (replicas=1) with a silent node fails open, as that node may hold it.
func decide(obs []nodeObs, sharded, strict bool) decision {
	var d decision
	answered, lockKey := 0, false
	d.Empty = true
	for i, o := range obs {
		if !o.Answered {
			continue
		}
		answered++
		lockKey = lockKey || o.LockKey
		d.Locked = d.Locked || o.Locked
		if o.Data {
			d.Sources = append(d.Sources, i)
			d.Empty = d.Empty && o.Empty
		}
	}
	all := answered == len(obs)
	switch {
	case answered == 0:
		return decision{Verdict: StoreDown}
	case len(d.Sources) == 0:
		d.Empty = false
		switch {
		case lockKey:
			d.Verdict = Verified
		case sharded && !all:
			d.Verdict = StoreDown
		case strict:
			d.Verdict = Unknown
		default:
			d.Verdict = Adopted
		}
		return d
	}
	d.Verdict = Verified
	if !sharded {
		for i, o := range obs {
			if o.Answered && !o.Data {
				d.Repair = append(d.Repair, i)
			}
		}
		if d.Locked {
			d.Repair = nil // and not cacheable: some node still misses it
			return d
		}
		if len(d.Repair) > 0 {
			d.Verdict = Repaired
		}
	}
	d.Cacheable = all && !d.Locked
	return d
}
