// Package keyslot computes the Redis Cluster hash slot of a key, as Redis
// does (CRC16-XMODEM of the key, or of its hash tag, modulo 16384), so that
// the ledger's key layout can be checked, and later partitioned, without a
// cluster. go-redis computes the same in an internal package it does not
// export; the algorithm is small and fixed by the cluster specification.
package keyslot

import "strings"

// Slots is the number of hash slots of a Redis Cluster.
const Slots = 16384

// HashTag is the part of key that Redis Cluster hashes: the text between
// the first '{' and the first '}' after it when that is not empty, else
// the whole key.
func HashTag(key string) string {
	open := strings.IndexByte(key, '{')
	if open < 0 {
		return key
	}
	end := strings.IndexByte(key[open+1:], '}')
	if end <= 0 { // no '}' after the '{', or "{}": the whole key
		return key
	}
	return key[open+1 : open+1+end]
}

// Of is the cluster hash slot of key.
func Of(key string) int {
	return int(CRC16(HashTag(key)) % Slots)
}

// Partition is the ledger partition of a tenant when the ledger is split
// into n partitions (n >= 1): CRC16 of the tenant modulo n, the hash Redis
// Cluster itself uses, so that a test can reason about both with one
// function (docs/decisions/0017-ledger-on-redis-cluster.md).
func Partition(tenant string, n int) int {
	if n <= 1 {
		return 0
	}
	return int(CRC16(tenant)) % n
}

// CRC16 is CRC16-XMODEM (polynomial 0x1021, initial value 0), the variant
// Redis Cluster uses.
func CRC16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
