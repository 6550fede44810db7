package routing

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// BenchmarkDynamicLaneFor is the routing decision the gateway makes for every
// task: dedicated lane lookup, then the least-backlogged lane of the
// tenant's shard. It runs in parallel, as concurrent requests do.
func BenchmarkDynamicLaneFor(b *testing.B) {
	static, err := NewStatic(16, 2)
	if err != nil {
		b.Fatal(err)
	}
	d := NewDynamic(static, []string{"tenant-urgent"})
	tenants := make([]string, 64)
	for i := range tenants {
		tenants[i] = fmt.Sprint("tenant-", i)
	}
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("01J%023d", i)
	}
	for _, c := range []struct {
		name   string
		tenant func(i int) string
	}{
		{name: "Shard", tenant: func(i int) string { return tenants[i%len(tenants)] }},
		{name: "LatencySensitive", tenant: func(int) string { return "tenant-urgent" }},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					_ = d.LaneFor(c.tenant(i), keys[i%len(keys)])
					i++
				}
			})
		})
	}
}

// BenchmarkSampleAndHoldObserve is the heavy-hitter count of one submitted
// task, with 1,000 tenants of which one sends a third of the tasks.
func BenchmarkSampleAndHoldObserve(b *testing.B) {
	s := NewSampleAndHold(0.01, 100_000, 20, rand.New(rand.NewPCG(1, 2)))
	tenants := make([]string, 1000)
	for i := range tenants {
		tenants[i] = fmt.Sprint("tenant-", i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		t := tenants[i%len(tenants)]
		if i%3 == 0 {
			t = "tenant-hot"
		}
		s.Observe(t, 1)
		i++
	}
}
