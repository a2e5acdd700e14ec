package main

// slots.go: the dense table of instances that snapshots copy.
//
// Every instance lives at an index of the table (instance.slot), with no
// holes, so a snapshot can take all of them without walking the map. The
// table is stored in fixed-size chunks and shared copy-on-write: a
// snapshot takes a view by copying the chunk pointers (a few hundred at 1M
// instances) and marking every chunk shared; a writer copies a chunk the
// first time it changes it after that. Copying the whole table instead
// (8 MB of pointers at 1M instances) paused writers for 10 ms on average
// and over 100 ms when the garbage collector was marking, since every
// pointer copied then goes through a write barrier.

const slotChunkSize = 4096

type slotChunk [slotChunkSize]*instance

// slotTable is guarded by state.mu; view needs the write lock (it changes
// ownership), everything else the lock a caller already needs.
type slotTable struct {
	chunks []*slotChunk
	owned  []bool // owned[c]: chunks[c] is in no view, so it may be written in place
	n      int
}

func (t *slotTable) len() int { return t.n }

func (t *slotTable) at(i int) *instance { return t.chunks[i/slotChunkSize][i%slotChunkSize] }

// set writes slot i, growing the table when i >= len (the slots between
// are nil until set: only an atomic batch's rollback leaves such gaps, and
// it fills them before it returns).
func (t *slotTable) set(i int, in *instance) {
	c := i / slotChunkSize
	for len(t.chunks) <= c {
		t.chunks = append(t.chunks, new(slotChunk))
		t.owned = append(t.owned, true)
	}
	if !t.owned[c] {
		cp := *t.chunks[c]
		t.chunks[c], t.owned[c] = &cp, true
	}
	t.chunks[c][i%slotChunkSize] = in
	t.n = max(t.n, i+1)
}

// truncate drops the slots from n on.
func (t *slotTable) truncate(n int) {
	if n >= t.n {
		return
	}
	keep := (n + slotChunkSize - 1) / slotChunkSize
	clear(t.chunks[keep:])
	t.chunks, t.owned = t.chunks[:keep], t.owned[:keep]
	if r := n % slotChunkSize; r != 0 {
		c := keep - 1
		if !t.owned[c] {
			cp := *t.chunks[c]
			t.chunks[c], t.owned[c] = &cp, true
		}
		clear(t.chunks[c][r:])
	}
	t.n = n
}

// view returns the table as it is now; later writes do not change it.
func (t *slotTable) view() slotView {
	for c := range t.owned {
		t.owned[c] = false
	}
	return slotView{chunks: append([]*slotChunk(nil), t.chunks...), n: t.n}
}

// slotView is a frozen copy of a slotTable, readable without any lock.
type slotView struct {
	chunks []*slotChunk
	n      int
}

func (v slotView) len() int { return v.n }

func (v slotView) at(i int) *instance { return v.chunks[i/slotChunkSize][i%slotChunkSize] }
