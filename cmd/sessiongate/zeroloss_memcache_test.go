//go:build faults

package main

import (
	"testing"

	"github.com/sessiongate/sessiongate/sessionstore/phptest"
)

// TestZeroLossUnderFaultsMemcache is TestZeroLossUnderFaults for the pecl
// memcache handler. It runs in `make faults`, not in `make test`, because it
// does not pass yet: after the "pause mc1" step 0-5 requests per run wait
// 10 s for a session lock that the resumed node took on behalf of a request
// that had long failed over (issue 14, open).
func TestZeroLossUnderFaultsMemcache(t *testing.T) {
	for _, v := range zlVariants(t, phptest.Memcache) {
		t.Run(v.name, func(t *testing.T) { zeroLoss(t, v) })
	}
}
