package main

import (
	"fmt"
	"testing"
)

// TestIdemTableViews checks the copy-on-write contract: a view keeps what
// the table held when it was taken, through sets, deletes and prunes of
// the same keys afterwards, while the table and its count follow every
// change.
func TestIdemTableViews(t *testing.T) {
	var tab idemTable
	key := func(i int) idemKey { return idemKey{uint8(i % 3), fmt.Sprintf("k%d", i)} }
	entry := func(i, gen int) *idemEntry {
		return &idemEntry{hash: fmt.Sprintf("h%d.%d", i, gen), lsn: uint64(i), expires: int64(1000 + i)}
	}
	const n = 20000 // several entries in every shard
	for i := range n {
		tab.set(key(i), entry(i, 0))
	}
	tab.set(key(7), entry(7, 0)) // replacing does not count twice
	if tab.len() != n {
		t.Fatalf("len %d, want %d", tab.len(), n)
	}
	view := tab.view()
	// Change every key after the view: replace the even ones, delete
	// every third, expire the first 5000 (expires < 1000+5000).
	for i := 0; i < n; i += 2 {
		tab.set(key(i), entry(i, 1))
	}
	for i := 0; i < n; i += 3 {
		tab.delete(key(i))
	}
	tab.delete(idemKey{0, "absent"})
	for i := range cowShardCount {
		tab.pruneShard(i, func(e *idemEntry) bool { return e.expires <= 1000+5000 })
	}

	seen := 0
	view.each(func(k idemKey, e *idemEntry) bool {
		seen++
		var i int
		fmt.Sscanf(k.key, "k%d", &i)
		if k != key(i) || e.hash != fmt.Sprintf("h%d.0", i) {
			t.Fatalf("view changed: %v -> %+v", k, e)
		}
		return true
	})
	if seen != n || view.len() != n {
		t.Fatalf("view holds %d entries (len %d), want %d", seen, view.len(), n)
	}

	want := 0
	for i := range n {
		e := tab.get(key(i))
		switch {
		case i%3 == 0 || 1000+i <= 1000+5000:
			if e != nil {
				t.Fatalf("key %d: deleted or expired, still there: %+v", i, e)
			}
		case i%2 == 0:
			want++
			if e == nil || e.hash != fmt.Sprintf("h%d.1", i) {
				t.Fatalf("key %d: want the replacement, got %+v", i, e)
			}
		default:
			want++
			if e == nil || e.hash != fmt.Sprintf("h%d.0", i) {
				t.Fatalf("key %d: want the original, got %+v", i, e)
			}
		}
	}
	counted := 0
	tab.each(func(idemKey, *idemEntry) bool { counted++; return true })
	if tab.len() != want || counted != want {
		t.Fatalf("table len %d, each %d, want %d", tab.len(), counted, want)
	}
}
