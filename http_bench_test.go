package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The figures for PERFORMANCE.md, run on demand:
//
//	STMDB_HTTP_FIGURES=1 go test -run TestHTTPFigures -v -timeout 10m .
//
// (1) APPLY_EVENT over HTTP/1.1 keep-alive at 64 connections against RCP
// at 64 connections × 1 in flight, same process, same server, alternating
// rounds; fsync every_write on the test's temp directory. (2) 1,000 SSE
// subscribers: every event delivered to every one, and the delivery lag
// (acknowledged write → event read by a subscriber).

func TestHTTPFigures(t *testing.T) {
	if os.Getenv("STMDB_HTTP_FIGURES") == "" {
		t.Skip("set STMDB_HTTP_FIGURES=1 to measure (slow)")
	}
	dur := 5 * time.Second
	if v := os.Getenv("STMDB_HTTP_FIGURES_SECS"); v != "" {
		n, _ := strconv.Atoi(v)
		dur = time.Duration(n) * time.Second
	}
	ts := startServer(t, func(c *config) { c.SegmentSizeMB = 64; c.CompactEnabled = false })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go ts.srv.serveHTTP(ln)
	base := "http://" + ln.Addr().String()
	c := ts.dial()
	mustOK(t, c, "PUT_MACHINE", `{"machine":"m","version":1,"definition":{"states":["a","b"],"initial":"a","transitions":[{"from":["a","b"],"event":"GO","to":"b"}]}}`)
	const conns = 64
	for i := range conns {
		mustOK(t, c, "CREATE_INSTANCE", fmt.Sprintf(`{"machine":"m","version":1,"instance_id":"i%d"}`, i))
	}
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}
	hc := &http.Client{Transport: tr}

	rcp := func() float64 {
		var n atomic.Int64
		var wg sync.WaitGroup
		stop := time.Now().Add(dur)
		for i := range conns {
			cl := ts.dial()
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := fmt.Sprintf(`{"instance_id":"i%d","event":"GO","payload":{"x":1}}`, i)
				for time.Now().Before(stop) {
					m, err := cl.call("APPLY_EVENT", jsonRaw(p))
					if err != nil || m.Error != nil {
						t.Errorf("rcp: %v %+v", err, m)
						return
					}
					n.Add(1)
				}
			}()
		}
		wg.Wait()
		return float64(n.Load()) / dur.Seconds()
	}
	web := func() float64 {
		var n atomic.Int64
		var wg sync.WaitGroup
		stop := time.Now().Add(dur)
		for i := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				url := fmt.Sprintf("%s/v1/instances/i%d/events", base, i)
				for time.Now().Before(stop) {
					resp, err := hc.Post(url, "application/json", strings.NewReader(`{"event":"GO","payload":{"x":1}}`))
					if err != nil {
						t.Errorf("http: %v", err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						t.Errorf("http: %d", resp.StatusCode)
						return
					}
					n.Add(1)
				}
			}()
		}
		wg.Wait()
		return float64(n.Load()) / dur.Seconds()
	}
	var rs, hs []float64
	for range 2 {
		rs = append(rs, rcp())
		hs = append(hs, web())
	}
	r, h := (rs[0]+rs[1])/2, (hs[0]+hs[1])/2
	t.Logf("APPLY_EVENT, 64 connections, every_write: RCP 64x1 %.0f ops/s %v, HTTP/1.1 keep-alive %.0f ops/s %v, HTTP/RCP = %.2f", r, rs, h, hs, h/r)

	// 1,000 SSE subscribers.
	const subs, events = 1000, 200
	str := &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: subs}
	sc := &http.Client{Transport: str}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	acked := make([]atomic.Int64, events+1) // event number -> ack time (unix ns)
	var lagMu sync.Mutex
	var lags []time.Duration
	got := make([]int, subs)
	var ready, done sync.WaitGroup
	for s := range subs {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/events?instance_id=i0&include_ctx=false", nil)
			resp, err := sc.Do(req)
			if err != nil {
				t.Errorf("subscribe: %v", err)
				ready.Done()
				return
			}
			defer resp.Body.Close()
			ready.Done()
			br := bufio.NewReader(resp.Body)
			mine := make([]time.Duration, 0, events)
			for got[s] < events {
				line, err := br.ReadString('\n')
				if err != nil {
					break
				}
				if i := strings.Index(line, `"seq":`); i >= 0 {
					k, _ := strconv.Atoi(strings.TrimRight(line[i+6:], "}\n"))
					now := time.Now().UnixNano()
					for acked[k].Load() == 0 { // the reply may still be on its way
						time.Sleep(10 * time.Microsecond)
					}
					mine = append(mine, time.Duration(now-acked[k].Load()))
					got[s]++
				}
			}
			lagMu.Lock()
			lags = append(lags, mine...)
			lagMu.Unlock()
		}()
	}
	ready.Wait()
	start := time.Now()
	for k := 1; k <= events; k++ {
		// the payload is merged into ctx, so its last key is seq: the event data ends with it.
		m, err := c.call("APPLY_EVENT", jsonRaw(fmt.Sprintf(`{"instance_id":"i0","event":"GO","payload":{"seq":%d}}`, k)))
		if err != nil || m.Error != nil {
			t.Fatalf("apply: %v %+v", err, m)
		}
		acked[k].Store(time.Now().UnixNano())
		time.Sleep(5 * time.Millisecond)
	}
	waited := make(chan struct{})
	go func() { done.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(60 * time.Second):
		cancel()
		<-waited
	}
	missing := 0
	for _, g := range got {
		missing += events - g
	}
	slices.Sort(lags)
	pct := func(p float64) time.Duration {
		if len(lags) == 0 {
			return 0
		}
		return lags[min(len(lags)-1, int(float64(len(lags))*p))]
	}
	t.Logf("SSE: %d subscribers x %d events in %v: %d deliveries, %d missing; lag after the write's ack p50 %v p99 %v max %v",
		subs, events, time.Since(start).Round(time.Millisecond), len(lags), missing, pct(0.50), pct(0.99), pct(1))
	if missing > 0 {
		t.Errorf("%d deliveries missing", missing)
	}
	cancel()
}

// jsonRaw passes params through client.call unchanged.
type jsonRaw string

func (j jsonRaw) MarshalJSON() ([]byte, error) { return []byte(j), nil }
