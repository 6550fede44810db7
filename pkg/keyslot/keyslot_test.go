package keyslot

import "testing"

func TestCRC16MatchesTheClusterSpecification(t *testing.T) {
	// The check value the Redis Cluster specification gives.
	if got := CRC16("123456789"); got != 0x31C3 {
		t.Fatalf("crc16(123456789) = %#04x, want 0x31c3", got)
	}
}

func TestOfMatchesRedis(t *testing.T) {
	// Slots as CLUSTER KEYSLOT answers them (Redis 7).
	for key, want := range map[string]int{
		"":                      0,
		"foo":                   12182,
		"bar":                   5061,
		"{user1000}.following":  Of("user1000"),
		"somekey":               11058,
		"tl:{acme}:task:01J000": Of("acme"),
	} {
		if got := Of(key); got != want {
			t.Errorf("Of(%q) = %d, want %d", key, got, want)
		}
	}
}

func TestHashTag(t *testing.T) {
	for key, want := range map[string]string{
		"plain":                "plain",
		"{user1000}.followers": "user1000",
		"foo{}{bar}":           "foo{}{bar}", // an empty tag: the whole key
		"foo{{bar}}zap":        "{bar",       // up to the first '}'
		"foo{bar}{zap}":        "bar",        // the first tag only
		"foo{bar":              "foo{bar",    // no closing brace
		"tl:{acme}:task:1":     "acme",
	} {
		if got := HashTag(key); got != want {
			t.Errorf("HashTag(%q) = %q, want %q", key, got, want)
		}
	}
	if Of("{user1000}.following") != Of("{user1000}.followers") {
		t.Error("keys with one hash tag must share a slot")
	}
}

func TestPartition(t *testing.T) {
	if got := Partition("acme", 1); got != 0 {
		t.Errorf("Partition(acme, 1) = %d, want 0", got)
	}
	if got, want := Partition("123456789", 64), 0x31C3%64; got != want {
		t.Errorf("Partition(123456789, 64) = %d, want %d", got, want)
	}
}
