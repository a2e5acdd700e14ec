// stmdb console: a small single-page app over the JSON API (/v1). No
// framework, no build step. The token (when auth is on) lives in
// sessionStorage and is sent as Authorization: Bearer; event streams are
// read with fetch, since EventSource cannot send that header.
'use strict';
const $ = (s, el = document) => el.querySelector(s);
const app = $('#app');
const esc = s => String(s).replace(/[&<>"']/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}[c]));
const enc = encodeURIComponent;
let streams = []; // event streams of the current page, closed on navigation

function headers(extra) {
  const h = Object.assign({}, extra);
  const t = sessionStorage.getItem('stmdb-token');
  if (t) h.Authorization = 'Bearer ' + t;
  return h;
}

async function api(path, opts = {}) {
  const r = await fetch('/v1' + path, {method: opts.method || 'GET', body: opts.body, headers: headers(opts.body ? {'Content-Type': 'application/json'} : {})});
  if (r.status === 401) { showLogin(); throw new Error('authentication required'); }
  const text = await r.text();
  if (!r.ok) {
    let e; try { e = JSON.parse(text).error; } catch (_) { e = {code: r.status, message: text}; }
    const err = new Error(e.code + ': ' + e.message); err.body = e; throw err;
  }
  return (r.headers.get('Content-Type') || '').includes('json') ? JSON.parse(text) : text;
}

function showLogin() {
  $('#login').hidden = false;
  app.innerHTML = '';
}
$('#login').addEventListener('submit', ev => {
  ev.preventDefault();
  sessionStorage.setItem('stmdb-token', $('#token').value);
  $('#login').hidden = true;
  route();
});
$('#logout').addEventListener('click', () => { sessionStorage.removeItem('stmdb-token'); location.reload(); });

// events streams GET /v1/events?query, calling onEvent(event) for each
// event (and onOpen once connected), and resumes after a dropped
// connection with Last-Event-ID.
function events(query, onEvent, onOpen) {
  const ctl = new AbortController();
  let last = '';
  const run = async () => {
    while (!ctl.signal.aborted) {
      try {
        const h = headers(last ? {'Last-Event-ID': last} : {});
        const r = await fetch('/v1/events?' + query, {headers: h, signal: ctl.signal});
        if (r.status === 401) { showLogin(); return; }
        if (!r.ok) throw new Error('events: ' + r.status);
        if (onOpen) onOpen();
        const rd = r.body.getReader();
        const dec = new TextDecoder();
        let buf = '';
        for (;;) {
          const {value, done} = await rd.read();
          if (done) break;
          buf += dec.decode(value, {stream: true});
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, i); buf = buf.slice(i + 2);
            let data = '';
            for (const line of block.split('\n')) {
              if (line.startsWith('id: ')) last = line.slice(4);
              else if (line.startsWith('data: ')) data += line.slice(6);
            }
            if (data) onEvent(JSON.parse(data));
          }
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
      }
      await new Promise(res => setTimeout(res, 1000));
    }
  };
  run();
  streams.push(ctl);
  return ctl;
}

async function diagram(machine, version, highlight) {
  const q = highlight ? '?highlight=' + enc(highlight) : '';
  return api(`/machines/${enc(machine)}/${version}/diagram.svg${q}`);
}

// ---- pages ----

async function machinesPage() {
  const {items} = await api('/machines');
  app.innerHTML = '<h2>Machines</h2>' + (items.length ? '' : '<p class="muted">No machines yet.</p>');
  for (const m of items) {
    for (const v of m.versions) {
      const card = document.createElement('div');
      card.className = 'card machine';
      card.dataset.machine = m.machine;
      card.innerHTML = `<h3>${esc(m.machine)} <span class="muted">v${v}</span> <a href="#/instances?machine=${enc(m.machine)}">instances</a></h3><div class="svg"></div>`;
      app.appendChild(card);
      $('.svg', card).innerHTML = await diagram(m.machine, v);
    }
  }
}

async function instancesPage(q) {
  const machine = q.get('machine') || '', state = q.get('state') || '';
  const offset = +(q.get('offset') || 0), limit = 50;
  let path = `/instances?limit=${limit}&offset=${offset}`;
  if (machine) path += '&machine=' + enc(machine);
  if (state) path += '&state=' + enc(state);
  const res = await api(path);
  const link = o => `#/instances?machine=${enc(machine)}&state=${enc(state)}&offset=${o}`;
  app.innerHTML = `<h2>Instances</h2>
  <form id="filter">machine <input name="machine" value="${esc(machine)}"> state <input name="state" value="${esc(state)}"> <button>Filter</button></form>
  <p class="muted">${res.total} total</p>
  <table><tr><th>id</th><th>machine</th><th>state</th><th>updated</th></tr>
  ${res.instances.map(i => `<tr><td><a href="#/instance/${enc(i.id)}">${esc(i.id)}</a></td><td>${esc(i.machine)} v${i.version}</td><td>${esc(i.state)}</td><td>${new Date(i.updated_at).toLocaleString()}</td></tr>`).join('')}
  </table>
  <p>${offset > 0 ? `<a href="${link(Math.max(0, offset - limit))}">&larr; previous</a>` : ''} ${res.has_more ? `<a href="${link(offset + limit)}">next &rarr;</a>` : ''}</p>`;
  $('#filter').addEventListener('submit', ev => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    location.hash = `#/instances?machine=${enc(f.get('machine'))}&state=${enc(f.get('state'))}`;
  });
}

async function instancePage(id) {
  app.innerHTML = `<h2>Instance ${esc(id)}</h2><div id="inst"></div>`;
  const box = $('#inst');
  let def = null;
  const render = async () => {
    const inst = await api('/instances/' + enc(id));
    if (!def) def = (await api(`/machines/${enc(inst.machine)}/${inst.version}`)).definition;
    const hist = await api(`/instances/${enc(id)}/history?limit=50`);
    const valid = [...new Set(def.transitions.filter(t => [].concat(t.from).includes(inst.state) && !t.after_ms).map(t => t.event))];
    const timers = inst.timers || [];
    box.innerHTML = `
    <p>Machine <a href="#/instances?machine=${enc(inst.machine)}">${esc(inst.machine)}</a> v${inst.version} &middot; state <span class="state" id="cur-state">${esc(inst.state)}</span> &middot; wal offset ${inst.last_wal_offset}</p>
    <div class="card svg">${await diagram(inst.machine, inst.version, inst.state)}</div>
    <div class="row">
      <div><h3>Apply an event</h3>
        <form id="apply">
          <select name="event" id="event">${valid.map(e => `<option>${esc(e)}</option>`).join('')}</select>
          <p>payload (JSON object)</p><textarea name="payload" id="payload">{}</textarea>
          <button ${valid.length ? '' : 'disabled'}>Apply</button> <span class="err" id="apply-err"></span>
        </form>
        <h3>ctx</h3><pre id="ctx">${esc(JSON.stringify(inst.ctx, null, 2))}</pre>
        <h3>Timers</h3>${timers.length ? `<ul>${timers.map(t => `<li>${esc(t.event)} &rarr; ${esc(t.to_state)} due ${new Date(t.due_at).toLocaleString()}</li>`).join('')}</ul>` : '<p class="muted">none armed</p>'}
        <p><button id="delete">Delete instance</button></p>
      </div>
      <div><h3>History</h3>
        <p class="muted">${hist.complete ? 'complete' : 'retained log starts at offset ' + hist.retained_from}</p>
        <ol id="timeline">${hist.items.map(h => `<li>#${h.offset} ${new Date(h.ts).toLocaleString()} ${h.event ? esc(h.from_state) + ' &mdash;' + esc(h.event) + '&rarr; ' : 'created in '}${esc(h.to_state)} <span class="muted">${esc(h.source)} ${esc(JSON.stringify(h.payload))}</span></li>`).join('')}</ol>
      </div>
    </div>`;
    $('#apply').addEventListener('submit', async ev => {
      ev.preventDefault();
      $('#apply-err').textContent = '';
      try {
        const payload = JSON.parse($('#payload').value || '{}');
        await api(`/instances/${enc(id)}/events`, {method: 'POST', body: JSON.stringify({event: $('#event').value, payload, expected_state: inst.state})});
      } catch (e) { $('#apply-err').textContent = e.message; }
    });
    $('#delete').addEventListener('click', async () => {
      if (!confirm(`Delete instance ${id}?`)) return;
      try { await api('/instances/' + enc(id), {method: 'DELETE'}); location.hash = '#/instances'; } catch (e) { $('#apply-err').textContent = e.message; }
    });
  };
  await render();
  // Live: every event of this instance re-renders the page.
  events('instance_id=' + enc(id), () => render().catch(e => { box.innerHTML = `<p class="err">${esc(e.message)}</p>`; }),
    () => { box.dataset.live = '1'; });
}

function eventsPage(q) {
  const f = k => q.get(k) || '';
  app.innerHTML = `<h2>Live events</h2>
  <form id="filter">machine <input name="machine" value="${esc(f('machine'))}"> event <input name="event" value="${esc(f('event'))}">
  from <input name="from_state" value="${esc(f('from_state'))}"> to <input name="to_state" value="${esc(f('to_state'))}"> <button>Filter</button></form>
  <p class="muted" id="feed-status">connecting&hellip;</p><ol id="feed" reversed></ol>`;
  $('#filter').addEventListener('submit', ev => {
    ev.preventDefault();
    location.hash = '#/events?' + new URLSearchParams([...new FormData(ev.target)].filter(([, v]) => v));
  });
  const params = new URLSearchParams([...q].filter(([k, v]) => v && ['machine', 'event', 'from_state', 'to_state'].includes(k)));
  params.set('include_ctx', 'false');
  const feed = $('#feed');
  events(params.toString(), e => {
    const li = document.createElement('li');
    li.dataset.instance = e.instance_id;
    li.innerHTML = `#${e.wal_offset} <a href="#/instance/${enc(e.instance_id)}">${esc(e.instance_id)}</a> (${esc(e.machine)}) ${esc(e.from_state)} &mdash;${esc(e.event)}&rarr; ${esc(e.to_state)} ${esc(JSON.stringify(e.payload))}`;
    feed.prepend(li);
    while (feed.children.length > 500) feed.lastChild.remove();
  }, () => { $('#feed-status').textContent = 'live'; });
}

async function serverPage() {
  const [info, wal, machines, instances] = await Promise.all([api('/info'), api('/wal/stats'), api('/machines'), api('/instances?limit=1')]);
  const rows = o => Object.entries(o).map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(typeof v === 'object' ? JSON.stringify(v) : v)}</td></tr>`).join('');
  app.innerHTML = `<h2>Server</h2><div class="row">
  <div><h3>Info</h3><table>${rows(info)}</table></div>
  <div><h3>Write-ahead log</h3><table>${rows(wal)}</table></div>
  <div><h3>Data</h3><table>${rows({machines: machines.items.length, machine_versions: machines.items.reduce((n, m) => n + m.versions.length, 0), instances: instances.total})}</table>
  ${info.replication ? `<h3>Replication</h3><pre>${esc(JSON.stringify(info.replication, null, 2))}</pre>` : ''}</div></div>`;
}

async function route() {
  streams.forEach(c => c.abort());
  streams = [];
  const [path, qs] = (location.hash.slice(1) || '/machines').split('?');
  const q = new URLSearchParams(qs || '');
  document.querySelectorAll('header nav a').forEach(a => a.classList.toggle('on', path.startsWith(a.getAttribute('href').slice(1))));
  $('#logout').hidden = !sessionStorage.getItem('stmdb-token');
  try {
    if (path.startsWith('/instance/')) await instancePage(decodeURIComponent(path.slice(10)));
    else if (path === '/instances') await instancesPage(q);
    else if (path === '/events') eventsPage(q);
    else if (path === '/server') await serverPage();
    else await machinesPage();
  } catch (e) {
    if (!$('#login').hidden) return;
    app.innerHTML = `<p class="err">${esc(e.message)}</p>`;
  }
}
window.addEventListener('hashchange', route);
route();
