package main

import (
	"math/rand/v2"
	"testing"
)

// TestSlotTable drives a slotTable with random appends, overwrites,
// truncations and views against a plain slice, and checks that every view
// still reads what the table held when it was taken.
func TestSlotTable(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var tab slotTable
	var model []*instance
	type frozen struct {
		v    slotView
		want []*instance
	}
	var views []frozen
	check := func(step int) {
		t.Helper()
		if tab.len() != len(model) {
			t.Fatalf("step %d: len %d, want %d", step, tab.len(), len(model))
		}
		for i, want := range model {
			if got := tab.at(i); got != want {
				t.Fatalf("step %d: slot %d = %p, want %p", step, i, got, want)
			}
		}
		for k, f := range views {
			if f.v.len() != len(f.want) {
				t.Fatalf("step %d: view %d len %d, want %d", step, k, f.v.len(), len(f.want))
			}
			for i, want := range f.want {
				if got := f.v.at(i); got != want {
					t.Fatalf("step %d: view %d slot %d changed", step, k, i)
				}
			}
		}
	}
	for step := range 4000 {
		switch r := rng.IntN(100); {
		case r < 50 || len(model) == 0: // append a run
			for range rng.IntN(3 * slotChunkSize / 2) {
				in := &instance{}
				tab.set(len(model), in)
				model = append(model, in)
			}
		case r < 80: // overwrite
			for range rng.IntN(50) {
				i, in := rng.IntN(len(model)), &instance{}
				tab.set(i, in)
				model[i] = in
			}
		case r < 93: // truncate
			n := rng.IntN(len(model) + 1)
			tab.truncate(n)
			model = model[:n]
		default:
			views = append(views, frozen{tab.view(), append([]*instance(nil), model...)})
			if len(views) > 8 {
				views = views[1:]
			}
		}
		if step%50 == 0 {
			check(step)
		}
	}
	check(-1)
	// Slots past the end read nil once they are set again (rollback relies
	// on set growing the table over a gap).
	n := tab.len()
	in := &instance{}
	tab.set(n+3, in)
	if tab.len() != n+4 || tab.at(n+3) != in || tab.at(n) != nil {
		t.Fatalf("set past the end: len %d", tab.len())
	}
}
