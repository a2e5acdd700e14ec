package main

// idem.go: the table of idempotency keys that snapshots share.
//
// A compaction used to copy every live key under the state lock, and to
// scan them all for expired ones under it too: with a million live keys
// (a day's worth at the default TTL and a dozen keyed writes a second),
// writers stopped for 0.4–1.2 s per compaction, plus 130–170 ms for the
// scan. The keys are now split into shards by hash, and a snapshot shares
// the shards copy-on-write, as the instance table does (slots.go): taking
// a view marks every shard shared, and the first change to a shared shard
// copies that shard alone (a few hundred entries at a million keys). The
// expiry scan takes the lock one shard at a time.

import (
	"hash/maphash"
	"maps"
)

const idemShardCount = 4096 // a power of two

// idemKey scopes an idempotency key to the operation it was used with.
type idemKey struct {
	typ uint8
	key string
}

// idemEntry is never changed once stored: a retry replaces it, so views
// may share the pointers.
type idemEntry struct {
	hash    string
	lsn     uint64
	expires int64  // Unix ms
	result  []byte // the original result, as a retry sees it
}

// idemTable is guarded by state.mu; view needs the write lock (it changes
// ownership), everything else the lock a caller already needs.
type idemTable struct {
	shards [idemShardCount]idemShard
	n      int
}

type idemShard struct {
	m      map[idemKey]*idemEntry
	shared bool // m is in a view: copy it before changing it
}

var idemSeed = maphash.MakeSeed()

func idemShardOf(k idemKey) int {
	return int(maphash.String(idemSeed, k.key)+uint64(k.typ)) & (idemShardCount - 1)
}

func (t *idemTable) len() int { return t.n }

func (t *idemTable) get(k idemKey) *idemEntry { return t.shards[idemShardOf(k)].m[k] }

// own returns shard i ready to be changed in place.
func (t *idemTable) own(i int) *idemShard {
	sh := &t.shards[i]
	if sh.shared {
		sh.m, sh.shared = maps.Clone(sh.m), false
	}
	if sh.m == nil {
		sh.m = map[idemKey]*idemEntry{}
	}
	return sh
}

func (t *idemTable) set(k idemKey, e *idemEntry) {
	sh := t.own(idemShardOf(k))
	if _, ok := sh.m[k]; !ok {
		t.n++
	}
	sh.m[k] = e
}

func (t *idemTable) delete(k idemKey) {
	i := idemShardOf(k)
	if _, ok := t.shards[i].m[k]; !ok {
		return
	}
	delete(t.own(i).m, k)
	t.n--
}

// pruneShard forgets shard i's keys that expired before now. A compaction
// calls it for every shard, taking the state lock for each.
func (t *idemTable) pruneShard(i int, now int64) {
	expired := false
	for _, e := range t.shards[i].m {
		if e.expires <= now {
			expired = true
			break
		}
	}
	if !expired {
		return
	}
	sh := t.own(i)
	for k, e := range sh.m {
		if e.expires <= now {
			delete(sh.m, k)
			t.n--
		}
	}
}

// pruneIdem forgets the idempotency keys that expired before now, taking
// the write lock once per shard: writers wait for a few hundred entries at
// most, not for all of them. The caller does not hold st.mu.
func (st *state) pruneIdem(now int64) {
	for i := range idemShardCount {
		st.mu.Lock()
		st.idem.pruneShard(i, now)
		st.mu.Unlock()
	}
}

// idemView is a snapshot's copy of the table: the shards' maps, which no
// writer changes from then on.
type idemView struct {
	shards []map[idemKey]*idemEntry
	n      int
}

// view shares every non-empty shard with the returned view.
func (t *idemTable) view() idemView {
	v := idemView{n: t.n}
	for i := range t.shards {
		if sh := &t.shards[i]; len(sh.m) > 0 {
			sh.shared = true
			v.shards = append(v.shards, sh.m)
		}
	}
	return v
}

func (v idemView) len() int { return v.n }

// each calls fn for every entry (in no particular order) until it returns
// false. On a table, the caller holds the state lock.
func (v idemView) each(fn func(idemKey, *idemEntry) bool) {
	for _, m := range v.shards {
		for k, e := range m {
			if !fn(k, e) {
				return
			}
		}
	}
}

func (t *idemTable) each(fn func(idemKey, *idemEntry) bool) {
	for i := range t.shards {
		for k, e := range t.shards[i].m {
			if !fn(k, e) {
				return
			}
		}
	}
}
