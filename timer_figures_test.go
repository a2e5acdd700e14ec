package main

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestTimerFigures measures what PERFORMANCE.md reports for timers. It is
// a measurement, not a check, so it runs only when asked:
//
//	STMDB_TIMER_FIGURES=1 go test -run TestTimerFigures -v -timeout 30m .
func TestTimerFigures(t *testing.T) {
	if os.Getenv("STMDB_TIMER_FIGURES") == "" {
		t.Skip("a measurement; set STMDB_TIMER_FIGURES=1 to run it")
	}
	t.Run("heap per armed timer", timerFigureHeap)
	t.Run("100k due at once", timerFigureBurst)
	t.Run("fire lag under load", timerFigureLag)
}

func timerFigureHeap(t *testing.T) {
	const n = 1_000_000
	st := newState(1000)
	mv, err := compileMachine("m", 1, []byte(`{"states":["a","b"],"initial":"a","transitions":[{"from":"a","event":"T","to":"b","after_ms":60000}]}`))
	if err != nil {
		t.Fatal(err)
	}
	st.apply(&record{typ: recPutMachine, lsn: 1, Machine: "m", Version: 1, Def: mv.def, mv: mv})
	for i := range n {
		st.apply(&record{typ: recCreateInstance, lsn: uint64(i + 2), Time: 1, Machine: "m", Version: 1, InstanceID: fmt.Sprintf("i%07d", i), InitialState: "a"})
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	armed := heap()
	st.timers.heap, st.timers.byInst = nil, map[string][]*timerEntry{}
	none := heap()
	st.armAll()
	again := heap()
	t.Logf("%d armed timers: %d bytes of heap each (the table: %.0f MiB; rebuilt from the instances: %.0f MiB)",
		len(st.timers.heap), (armed-none)/n, float64(armed-none)/(1<<20), float64(again-none)/(1<<20))
	runtime.KeepAlive(st)
}

// timerLoad runs conns clients applying events on their own instances
// until stop, recording each APPLY_EVENT's latency by when it finished.
type timerLoad struct {
	mu   sync.Mutex
	lats []struct {
		at  time.Time
		lat time.Duration
	}
}

func (l *timerLoad) run(t *testing.T, addr string, conns int, stop <-chan struct{}, wg *sync.WaitGroup) {
	for w := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := dialClient(addr, 5*time.Second)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.close()
			id := fmt.Sprintf("load-%d", w)
			if m, err := c.call("CREATE_INSTANCE", `{"machine":"ctr","version":1,"instance_id":"`+id+`"}`); err != nil || m.Status != "ok" {
				t.Errorf("create %s: %v", id, err)
				return
			}
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				m, err := c.call("APPLY_EVENT", `{"instance_id":"`+id+`","event":"INC"}`)
				if err != nil || m.Status != "ok" {
					t.Errorf("apply: %v", err)
					return
				}
				end := time.Now()
				l.mu.Lock()
				l.lats = append(l.lats, struct {
					at  time.Time
					lat time.Duration
				}{end, end.Sub(start)})
				l.mu.Unlock()
			}
		}()
	}
}

// p99 of the latencies that finished within [from, to).
func (l *timerLoad) quantiles(from, to time.Time) (n int, p50, p99 time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ds []time.Duration
	for _, x := range l.lats {
		if !x.at.Before(from) && x.at.Before(to) {
			ds = append(ds, x.lat)
		}
	}
	if len(ds) == 0 {
		return 0, 0, 0
	}
	slices.Sort(ds)
	return len(ds), ds[len(ds)/2], ds[len(ds)*99/100]
}

func timerFigureBurst(t *testing.T) {
	const n = 100_000
	ts := startServer(t, func(c *config) { c.MaxBatchOps = 1000; c.SegmentSizeMB = 64; c.CompactEnabled = false })
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	mustOK(t, c, "PUT_MACHINE", orderTimerMachine)
	for b := 0; b < n; b += 1000 {
		var ops []string
		for k := b; k < b+1000; k++ {
			ops = append(ops, fmt.Sprintf(`{"op":"CREATE_INSTANCE","params":{"machine":"order","version":1,"instance_id":"o%d"}}`, k))
		}
		mustOK(t, c, "BATCH", `{"mode":"best_effort","ops":[`+strings.Join(ops, ",")+`]}`)
	}
	var load timerLoad
	stop := make(chan struct{})
	var wg sync.WaitGroup
	load.run(t, ts.addr, 8, stop, &wg)
	time.Sleep(2 * time.Second)
	before := time.Now()
	timerClock(ts, 2*time.Minute) // all 100k are due now
	for ts.srv.st.timers.fired.Load() < n {
		time.Sleep(time.Millisecond)
	}
	last := ts.srv.log.lastLSN()
	if err := ts.srv.log.waitDurable(last); err != nil {
		t.Fatal(err)
	}
	fired := time.Since(before)
	after := time.Now()
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	qn, q50, q99 := load.quantiles(before.Add(-2*time.Second), before)
	bn, b50, b99 := load.quantiles(before, after)
	t.Logf("%d timers due at once: all fired and durable in %v (%.0f fires/s)", n, fired.Round(time.Millisecond), float64(n)/fired.Seconds())
	t.Logf("client APPLY_EVENT (8 connections, 1 in flight each): before: %d ops, p50 %v, p99 %v; during the burst: %d ops, p50 %v, p99 %v",
		qn, q50, q99, bn, b50, b99)
}

func timerFigureLag(t *testing.T) {
	ts := startServer(t, func(c *config) { c.CompactEnabled = false })
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", ctrMachine)
	mustOK(t, c, "PUT_MACHINE", `{"machine":"short","version":1,"definition":{"states":["a","b"],"initial":"a","transitions":[{"from":"a","event":"T","to":"b","after_ms":200}]}}`)
	w := ts.dial()
	w.nc.SetDeadline(time.Now().Add(5 * time.Minute))
	mustOK(t, w, "WATCH_ALL", `{"machines":["short"]}`)
	var load timerLoad
	stop := make(chan struct{})
	var wg sync.WaitGroup
	load.run(t, ts.addr, 8, stop, &wg)
	const n = 5000
	created := make(map[string]time.Time, n)
	var mu sync.Mutex
	done := make(chan []time.Duration)
	go func() {
		var lags []time.Duration
		for len(lags) < n {
			m, err := w.recv()
			if err != nil {
				t.Error(err)
				break
			}
			if m.Type != "event" {
				continue
			}
			var ev struct {
				ID string `json:"instance_id"`
			}
			mustUnmarshal(t, m.Raw, &ev)
			mu.Lock()
			at := created[ev.ID]
			mu.Unlock()
			lags = append(lags, time.Since(at.Add(200*time.Millisecond)))
		}
		done <- lags
	}()
	// 1,000 creates a second, each armed for 200 ms.
	tick := time.NewTicker(time.Millisecond)
	for i := range n {
		<-tick.C
		id := fmt.Sprintf("s%d", i)
		res := mustOK(t, c, "CREATE_INSTANCE", `{"machine":"short","version":1,"instance_id":"`+id+`"}`)
		var r struct {
			Off uint64 `json:"wal_offset"`
		}
		mustUnmarshal(t, res, &r)
		in := getTimerInstance(t, c, id)
		due, _ := time.Parse(time.RFC3339Nano, in.Timers[0].DueAt)
		mu.Lock()
		created[id] = due.Add(-200 * time.Millisecond).Add(-time.Duration(ts.srv.skewMS.Load()) * time.Millisecond)
		mu.Unlock()
	}
	tick.Stop()
	lags := <-done
	close(stop)
	wg.Wait()
	slices.Sort(lags)
	t.Logf("fire lag, due time to the watcher's receipt (>= durable), %d timers under 8×1 APPLY load: p50 %v, p99 %v, max %v",
		len(lags), lags[len(lags)/2].Round(10*time.Microsecond), lags[len(lags)*99/100].Round(10*time.Microsecond), lags[len(lags)-1].Round(10*time.Microsecond))
}
