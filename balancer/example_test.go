package balancer_test

import (
	"fmt"
	"net/url"

	"github.com/sessiongate/sessiongate/balancer"
)

func Example() {
	web := func(name, host string, weight int) *balancer.Backend {
		return balancer.NewBackend(name, &url.URL{Scheme: "http", Host: host}, weight)
	}
	pool, err := balancer.NewPool(balancer.WeightedRoundRobin, []*balancer.Backend{
		web("web1", "127.0.0.1:8081", 5),
		web("web2", "127.0.0.1:8082", 1),
		web("web3", "127.0.0.1:8083", 1),
	})
	if err != nil {
		panic(err)
	}
	var picked []string
	for range 7 {
		b := pool.Pick(nil)
		b.Acquire()
		// ... proxy the request to b.URL ...
		b.Release(false)
		picked = append(picked, b.Name)
	}
	fmt.Println(picked)

	// A failed attempt on web1 is retried elsewhere; drained backends get no new requests.
	tried := []*balancer.Backend{pool.Backend("web1")}
	if err := pool.SetAdmin("web2", balancer.AdminDraining); err != nil {
		panic(err)
	}
	fmt.Println(pool.Pick(tried).Name, pool.Backend("web2").State())
	// Output:
	// [web1 web1 web2 web1 web3 web1 web1]
	// web3 draining
}
