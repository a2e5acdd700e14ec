package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The console in a real browser: headless Chromium loads a harness page
// (served by this test only, same origin as the console) that opens the
// console in iframes and drives it as a user would: it finds the
// machine's diagram and its states, opens an instance, picks an event in
// the form and applies it, then waits for the instance's state and the
// live feed to change without a reload. The harness writes its verdict
// into its own DOM, which --dump-dom prints. Then a screenshot of the
// instance page is kept as an artifact (STMDB_ARTIFACTS, or a directory
// under the system temp dir).

const browserHarness = `<!doctype html><html><body>
<iframe id="m" src="/#/machines" width="1000" height="500"></iframe>
<iframe id="f" src="/#/events?machine=order" width="1000" height="300"></iframe>
<iframe id="i" width="1000" height="900"></iframe>
<pre id="result">pending</pre>
<script>
const log = [];
const doc = id => document.getElementById(id).contentDocument;
const sleep = ms => new Promise(r => setTimeout(r, ms));
async function wait(fn, what) {
  for (let i = 0; i < 300; i++) {
    try { const v = fn(); if (v) return v; } catch (e) {}
    await sleep(50);
  }
  throw new Error('timed out waiting for ' + what);
}
(async () => {
  try {
    const svg = await wait(() => doc('m').querySelector('svg.diagram[data-machine="order"]'), 'the machine diagram');
    log.push('diagram states: ' + [...svg.querySelectorAll('g.node')].map(g => g.dataset.state).join(','));
    await wait(() => doc('f').getElementById('feed-status').textContent === 'live', 'the live feed to connect');
    document.getElementById('i').src = '/#/instance/o-1';
    await wait(() => doc('i').getElementById('inst') && doc('i').getElementById('inst').dataset.live === '1', 'the instance page to go live');
    const d = doc('i');
    log.push('state before: ' + d.getElementById('cur-state').textContent);
    log.push('events offered: ' + [...d.querySelectorAll('#event option')].map(o => o.value).join(','));
    d.getElementById('event').value = 'PAY';
    d.getElementById('payload').value = '{"by": "browser"}';
    d.querySelector('#apply button').click();
    await wait(() => doc('i').getElementById('cur-state').textContent === 'paid', 'the state to become paid');
    log.push('state after: ' + doc('i').getElementById('cur-state').textContent);
    log.push('highlighted: ' + doc('i').querySelector('g.node.cur').dataset.state);
    log.push('timeline top: ' + doc('i').querySelector('#timeline li').textContent.replace(/\s+/g, ' '));
    const li = await wait(() => doc('f').querySelector('#feed li[data-instance="o-1"]'), 'the live feed entry');
    log.push('feed: ' + li.textContent);
    document.getElementById('result').textContent = JSON.stringify({ok: true, log});
  } catch (e) {
    document.getElementById('result').textContent = JSON.stringify({ok: false, error: e.message, log});
  }
})();
</script></body></html>`

func findChromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// chromium runs headless Chromium with args; output is stdout.
func chromium(t *testing.T, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--user-data-dir=" + t.TempDir()}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", bin, args, err, stderr.String())
	}
	return string(out)
}

func TestHTTPBrowserConsole(t *testing.T) {
	bin := findChromium()
	if bin == "" {
		t.Skip("no Chromium binary (chromium, chromium-browser, google-chrome) on PATH: the browser test of the console is skipped; apt-get install chromium to run it")
	}
	if testing.Short() {
		t.Skip("real browser; skipped with -short")
	}
	ts := startServer(t, nil)
	h := ts.srv.httpHandler()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /harness.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte(browserHarness))
	})
	mux.Handle("/", h)
	web := httptest.NewServer(mux)
	t.Cleanup(web.Close)
	e := &httpEnv{t: t, ts: ts, web: web}
	e.setup()
	e.ok("POST", "/v1/instances", `{"machine":"order","version":1,"instance_id":"o-2"}`)

	dom := chromium(t, bin, "--virtual-time-budget=30000", "--run-all-compositor-stages-before-draw", "--dump-dom", web.URL+"/harness.html")
	m := regexp.MustCompile(`(?s)<pre id="result">(.*?)</pre>`).FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("no result in the dumped DOM:\n%s", dom)
	}
	var res struct {
		OK    bool     `json:"ok"`
		Error string   `json:"error"`
		Log   []string `json:"log"`
	}
	if err := json.Unmarshal([]byte(strings.ReplaceAll(m[1], "&quot;", `"`)), &res); err != nil {
		t.Fatalf("result %q: %v", m[1], err)
	}
	for _, l := range res.Log {
		t.Log(l)
	}
	if !res.OK {
		t.Fatalf("browser scenario failed: %s", res.Error)
	}
	want := []string{"diagram states: created,paid,shipped,cancelled", "state before: created", "events offered: PAY,CANCEL", "state after: paid", "highlighted: paid"}
	for i, w := range want {
		if res.Log[i] != w {
			t.Errorf("log[%d] = %q, want %q", i, res.Log[i], w)
		}
	}
	if !strings.Contains(res.Log[len(res.Log)-1], "created —PAY→ paid") {
		t.Errorf("feed entry: %q", res.Log[len(res.Log)-1])
	}
	// The server agrees.
	got, _ := e.ok("GET", "/v1/instances/o-1", "")
	if got["state"] != "paid" || got["ctx"].(map[string]any)["by"] != "browser" {
		t.Errorf("instance after the browser: %v", got)
	}

	dir := os.Getenv("STMDB_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "stmdb-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, "console-instance.png")
	chromium(t, bin, "--virtual-time-budget=5000", "--window-size=1200,1000", "--hide-scrollbars", "--screenshot="+shot, web.URL+"/#/instance/o-1")
	if fi, err := os.Stat(shot); err != nil || fi.Size() < 1000 {
		t.Fatalf("screenshot %s: %v", shot, err)
	}
	t.Logf("screenshot: %s", shot)
}
