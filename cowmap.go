package main

// cowmap.go: maps that snapshots share copy-on-write instead of copying.
//
// A cowMap splits its entries into shards by hash. A snapshot takes a view
// under the state lock by marking every shard shared (time proportional to
// the number of shards, not of entries), then reads the views' maps
// without the lock; the first change to a shared shard copies that shard
// alone. The instance table does the same with chunks of slots
// (slots.go). Used for the idempotency keys (idem.go) and the ids of
// deleted instances kept while storage.allow_instance_recreate is false.

import (
	"hash/maphash"
	"maps"
)

const cowShardCount = 4096 // a power of two

var cowSeed = maphash.MakeSeed()

// stringShards spreads string keys over a cowMap's shards.
type stringShards struct{}

func (stringShards) shard(k string) int { return int(maphash.String(cowSeed, k)) }

// cowShardOf picks a key's shard; implemented by zero-size types, so a
// cowMap's zero value is ready to use.
type cowShardOf[K any] interface{ shard(K) int }

// cowMap is guarded by state.mu; view needs the write lock (it changes
// ownership), everything else the lock a caller already needs. Values are
// shared with views, so they must not be changed in place either.
type cowMap[K comparable, V any, S cowShardOf[K]] struct {
	shards [cowShardCount]cowShard[K, V]
	n      int
}

type cowShard[K comparable, V any] struct {
	m      map[K]V
	shared bool // m is in a view: copy it before changing it
}

func (t *cowMap[K, V, S]) shardOf(k K) int {
	var s S
	return s.shard(k) & (cowShardCount - 1)
}

func (t *cowMap[K, V, S]) len() int { return t.n }

// get returns k's value, or V's zero value.
func (t *cowMap[K, V, S]) get(k K) V { return t.shards[t.shardOf(k)].m[k] }

func (t *cowMap[K, V, S]) has(k K) bool {
	_, ok := t.shards[t.shardOf(k)].m[k]
	return ok
}

// own returns shard i ready to be changed in place.
func (t *cowMap[K, V, S]) own(i int) *cowShard[K, V] {
	sh := &t.shards[i]
	if sh.shared {
		sh.m, sh.shared = maps.Clone(sh.m), false
	}
	if sh.m == nil {
		sh.m = map[K]V{}
	}
	return sh
}

func (t *cowMap[K, V, S]) set(k K, v V) {
	sh := t.own(t.shardOf(k))
	if _, ok := sh.m[k]; !ok {
		t.n++
	}
	sh.m[k] = v
}

func (t *cowMap[K, V, S]) delete(k K) {
	i := t.shardOf(k)
	if _, ok := t.shards[i].m[k]; !ok {
		return
	}
	delete(t.own(i).m, k)
	t.n--
}

// pruneShard deletes shard i's entries for which drop returns true,
// copying the shard first only if there is any.
func (t *cowMap[K, V, S]) pruneShard(i int, drop func(V) bool) {
	found := false
	for _, v := range t.shards[i].m {
		if drop(v) {
			found = true
			break
		}
	}
	if !found {
		return
	}
	sh := t.own(i)
	for k, v := range sh.m {
		if drop(v) {
			delete(sh.m, k)
			t.n--
		}
	}
}

// cowView is a snapshot's copy of a cowMap: the shards' maps, which no
// writer changes from then on.
type cowView[K comparable, V any] struct {
	shards []map[K]V
	n      int
}

// view shares every non-empty shard with the returned view.
func (t *cowMap[K, V, S]) view() cowView[K, V] {
	v := t.peek()
	for i := range t.shards {
		if sh := &t.shards[i]; len(sh.m) > 0 {
			sh.shared = true
		}
	}
	return v
}

// peek is a view that does not mark the shards shared: valid only until
// the table next changes.
func (t *cowMap[K, V, S]) peek() cowView[K, V] {
	v := cowView[K, V]{n: t.n}
	for i := range t.shards {
		if m := t.shards[i].m; len(m) > 0 {
			v.shards = append(v.shards, m)
		}
	}
	return v
}

func (v cowView[K, V]) len() int { return v.n }

// each calls fn for every entry (in no particular order) until it returns
// false.
func (v cowView[K, V]) each(fn func(K, V) bool) {
	for _, m := range v.shards {
		for k, e := range m {
			if !fn(k, e) {
				return
			}
		}
	}
}

// each is cowView.each on the table itself; the caller holds the lock.
func (t *cowMap[K, V, S]) each(fn func(K, V) bool) { t.peek().each(fn) }
