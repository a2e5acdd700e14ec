package main

// idem.go: the idempotency keys.
//
// A compaction used to copy every live key under the state lock, and to
// scan them all for expired ones under it too: with a million live keys
// (a day's worth at the default TTL and a dozen keyed writes a second),
// writers stopped for 0.4–1.2 s per compaction, plus 130–170 ms for the
// scan. The keys are now a cowMap (cowmap.go), which snapshots share, and
// the expiry scan takes the lock one shard at a time.

import (
	"hash/maphash"
	"time"
)

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

type idemTable = cowMap[idemKey, *idemEntry, idemShards]

// idemShards spreads idempotency keys over a cowMap's shards.
type idemShards struct{}

func (idemShards) shard(k idemKey) int { return int(maphash.String(cowSeed, k.key) + uint64(k.typ)) }

// pruneIdem forgets the idempotency keys that expired before now, taking
// the write lock once per shard: writers wait for a few hundred entries at
// most, not for all of them. The caller does not hold st.mu.
func (st *state) pruneIdem(now int64) {
	expired := func(e *idemEntry) bool { return e.expires <= now }
	for i := range cowShardCount {
		st.mu.Lock()
		st.idem.pruneShard(i, expired)
		st.mu.Unlock()
	}
}

// idemPruneLoop forgets expired idempotency keys on its own schedule, so
// that they do not pile up when compaction is off or rare (compaction
// prunes too, to keep them out of its snapshot).
func (s *server) idemPruneLoop(stop <-chan struct{}, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		s.st.pruneIdem(s.now())
	}
}
