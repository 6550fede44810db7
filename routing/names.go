package routing

import "fmt"

// DefaultPrefix is the default broker prefix (config broker.prefix): the
// lane names under it are SharedLanePrefix and DedicatedLanePrefix.
const DefaultPrefix = "tasklane"

// Names builds lane names under one broker prefix (config broker.prefix), so
// several deployments can share a broker. The zero value uses DefaultPrefix.
type Names struct {
	// Prefix starts every lane name; empty means DefaultPrefix.
	Prefix string
}

// NamesFor returns the lane names under prefix (empty: DefaultPrefix).
func NamesFor(prefix string) Names { return Names{Prefix: prefix} }

func (n Names) prefix() string {
	if n.Prefix == "" {
		return DefaultPrefix
	}
	return n.Prefix
}

// SharedPrefix prefixes every shared lane: "<prefix>.lane.shared.".
func (n Names) SharedPrefix() string { return n.prefix() + ".lane.shared." }

// Shared is the name of shared lane i: "<prefix>.lane.shared.NN".
func (n Names) Shared(i int) string { return fmt.Sprintf("%s%02d", n.SharedPrefix(), i) }

// DedicatedPrefix prefixes every dedicated lane: "<prefix>.lane.tenant.".
func (n Names) DedicatedPrefix() string { return n.prefix() + ".lane.tenant." }

// Dedicated is tenant's dedicated lane: "<prefix>.lane.tenant.<tenant>".
func (n Names) Dedicated(tenant string) string { return n.DedicatedPrefix() + tenant }
