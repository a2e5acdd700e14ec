package main

import (
	"math/rand"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The incremental id index behind LIST_INSTANCES always equals the sorted
// ids of the instances present, through creates, deletes, re-creates and
// rolled-back atomic batches (the seed is printed for replay).
func TestSortedIDsProperty(t *testing.T) {
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	st := newState(1000)
	mv, _ := compileMachine("m", 1, []byte(`{"states":["s"],"initial":"s","transitions":[]}`))
	st.apply(&record{typ: recPutMachine, lsn: 1, Machine: "m", Version: 1, Def: mv.def, mv: mv})
	lsn := uint64(1)
	for step := 0; step < 3000; step++ {
		id := "i" + strconv.Itoa(rng.Intn(300))
		lsn++
		inBatch := rng.Intn(10) == 0
		if inBatch {
			st.beginUndo()
		}
		if st.instances[id] == nil {
			st.apply(&record{typ: recCreateInstance, lsn: lsn, Machine: "m", Version: 1, InstanceID: id, InitialState: "s"})
		} else {
			st.apply(&record{typ: recDeleteInstance, lsn: lsn, InstanceID: id})
		}
		if inBatch {
			st.rollback()
		}
		if rng.Intn(7) == 0 {
			want := make([]string, 0, len(st.instances))
			for k := range st.instances {
				want = append(want, k)
			}
			sort.Strings(want)
			if diff := cmp.Diff(want, st.sortedIDs()); diff != "" {
				t.Fatalf("step %d (seed %d): sortedIDs (-want +got):\n%s", step, seed, diff)
			}
			checkSlots(t, st)
		}
	}
}
