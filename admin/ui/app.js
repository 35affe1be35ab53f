// sessiongate dashboard: polls api/status and redraws in place.
// Every value from the server is inserted with textContent or as an SVG
// attribute computed from numbers, never parsed as markup.
'use strict';
(() => {
  const POLL_MS = 1500;
  const WINDOW_MS = 5 * 60 * 1000; // sparkline history kept in memory
  const MAX_POINTS = 400;
  // The admin token, asked for once and kept in this page's memory only
  // (never in storage or a cookie); sent as the Authorization header, which
  // a cross-site page cannot make the browser add.
  let adminToken = null;
  const STATES = ['up', 'down', 'draining', 'maintenance', 'restarting'];
  const SVG_NS = 'http://www.w3.org/2000/svg';

  const $ = (id) => document.getElementById(id);
  let prev = null; // previous status, for rates
  const history = []; // {t, lookups, repairs, stripped, renewals} in per-second rates

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function badge(state) {
    return el('span', state || 'unknown', 'badge ' + (STATES.includes(state) ? state : 'unknown'));
  }
  const fmtInt = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '–');
  function fmtRate(v) {
    if (v === null || !Number.isFinite(v)) return '–';
    return v < 10 ? v.toFixed(1) : fmtInt(v);
  }
  function fmtMs(v) {
    if (!Number.isFinite(v) || v <= 0) return '–';
    return v < 10 ? v.toFixed(2) + ' ms' : fmtInt(v) + ' ms';
  }
  function fmtUptime(s) {
    if (!Number.isFinite(s) || s <= 0) return '–';
    const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d > 0) return d + 'd ' + h + 'h';
    if (h > 0) return h + 'h ' + m + 'm';
    return m + 'm ' + Math.floor(s % 60) + 's';
  }
  function fmtBytes(n) {
    if (!Number.isFinite(n) || n <= 0) return '0';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (n < 10 && i > 0 ? n.toFixed(1) : Math.round(n)) + ' ' + u[i];
  }
  // rate returns the per-second increase of a counter, or null without a
  // usable previous sample (first poll, restart of sessiongate).
  function rate(now, before, dt) {
    if (before === undefined || dt <= 0 || now < before) return null;
    return (now - before) / dt;
  }
  function say(text, isError) {
    const m = $('msg');
    m.textContent = text;
    m.className = isError ? 'error' : '';
  }

  function sessionTotals(s) {
    const l = s.lookups || {};
    let lookups = 0, stripped = 0;
    for (const [k, v] of Object.entries(l)) {
      lookups += v;
      if (k.endsWith('_stripped')) stripped += v;
    }
    return { lookups, stripped, repairs: s.repairs || 0, renewals: s.renewals || 0 };
  }

  function renderBackends(list, prevList, dt) {
    const before = new Map((prevList || []).map((b) => [b.name, b]));
    const rows = list.map((b) => {
      const p = before.get(b.name);
      const tr = document.createElement('tr');
      const name = el('td', b.name, 'name');
      name.title = b.url || '';
      name.append(el('small', b.url || ''));
      const st = el('td');
      st.append(badge(b.state));
      if (b.warming) {
        const w = el('span', 'warming ' + Math.round(100 * b.share) + '%', 'badge warming');
        w.title = 'slow start: gets this share of its full load, growing to 100% over health.slow_start';
        st.append(' ', w);
      }
      if (b.last_error) st.title = b.last_error;
      const dReq = p ? b.requests - p.requests : 0;
      const dErr = p ? b.errors - p.errors : 0;
      const errText = dReq > 0 && dErr >= 0 ? ((100 * dErr) / dReq).toFixed(1) + '%' : '–';
      const acts = el('td', null, 'actions');
      for (const [action, label, disabled] of [
        ['drain', 'Drain', b.state === 'draining'],
        ['enable', 'Enable', b.state === 'up' || b.state === 'down'],
        ['maintenance', 'Maintenance', b.state === 'maintenance'],
      ]) {
        const btn = el('button', label);
        btn.type = 'button';
        btn.disabled = disabled;
        btn.addEventListener('click', () => act(b.name, action));
        acts.append(btn);
      }
      tr.append(name, st,
        el('td', fmtRate(p ? rate(b.requests, p.requests, dt) : null), 'num'),
        el('td', errText, 'num'),
        el('td', fmtMs(b.latency_ms), 'num'),
        el('td', fmtInt(b.in_flight), 'num'),
        acts);
      return tr;
    });
    if (rows.length === 0) rows.push(emptyRow('No backends configured', 7));
    fillTable($('backends'), rows);
  }

  function renderNodes(list) {
    const rows = list.map((n) => {
      const tr = document.createElement('tr');
      const st = el('td');
      st.append(badge(n.state));
      if (n.state === 'restarting') st.title = 'connection lost: requests with a session wait for it (memcached.restart_hold)';
      else if (n.last_error) st.title = n.last_error;
      tr.append(el('td', n.addr, 'name'), st,
        el('td', fmtMs(n.latency_ms), 'num'),
        el('td', fmtUptime(n.uptime_s), 'num'),
        el('td', fmtInt(n.items), 'num'),
        el('td', fmtInt(n.evictions), 'num'),
        el('td', fmtInt(n.connection_losses), 'num'),
        el('td', fmtInt(n.restarts), 'num'),
        el('td', fmtBytes(n.bytes) + (n.limit_bytes > 0 ? ' / ' + fmtBytes(n.limit_bytes) : ''), 'num'));
      if (n.last_restart) tr.title = 'last restart ' + n.last_restart;
      return tr;
    });
    if (rows.length === 0) rows.push(emptyRow('No memcached nodes', 9));
    fillTable($('nodes'), rows);
  }

  // fillTable replaces the body rows and labels each cell with its column
  // header, which the narrow-screen CSS shows when rows become cards.
  function fillTable(table, rows) {
    const heads = [...table.tHead.rows[0].cells].map((th) => th.textContent);
    for (const tr of rows) {
      [...tr.cells].forEach((td, i) => { td.dataset.label = heads[i] || ''; });
    }
    table.tBodies[0].replaceChildren(...rows);
  }

  function emptyRow(text, span) {
    const tr = document.createElement('tr');
    const td = el('td', text, 'muted');
    td.colSpan = span;
    tr.append(td);
    return tr;
  }

  function renderSessions(s, prevS, dt, t) {
    const cur = sessionTotals(s);
    const old = prevS ? sessionTotals(prevS) : {};
    const point = { t };
    for (const k of ['lookups', 'repairs', 'stripped', 'renewals']) {
      point[k] = rate(cur[k], old[k], dt);
    }
    if (prevS) history.push(point);
    while (history.length > MAX_POINTS || (history.length && history[0].t < t - WINDOW_MS)) history.shift();

    for (const k of ['lookups', 'repairs', 'stripped', 'renewals']) {
      const fig = $('fig-' + k);
      fig.querySelector('.value').textContent = fmtRate(point[k]);
      fig.querySelector('.total').textContent = fmtInt(cur[k]) + ' total';
      const svg = sparkline(fig);
      svg.firstChild.setAttribute('points', sparkPoints(k, t));
    }

    const rows = Object.keys(s.lookups || {}).sort().map((k) => {
      const tr = document.createElement('tr');
      tr.append(el('td', k.replace(/_/g, ' ')), el('td', fmtInt(s.lookups[k]), 'num'));
      return tr;
    });
    const extra = [['held for a restarting node', s.held], ['sent to PHP again (PHP lost the session at a fault)', s.replays], ['kills', s.kills]];
    if (!('cached' in (s.lookups || {}))) extra.unshift(['cached (verification reused)', s.cached]);
    for (const [label, v] of extra) {
      const tr = document.createElement('tr');
      tr.append(el('td', label, 'muted'), el('td', fmtInt(v || 0), 'num'));
      rows.push(tr);
    }
    $('outcomes').tBodies[0].replaceChildren(...rows);

    const queue = [['sessions with requests waiting', s.queue_sessions], ['requests waiting', s.queue_waiters],
      ['timed out (503)', s.queue_timeouts], ['refused, queue full (503)', s.queue_full]];
    $('queue').tBodies[0].replaceChildren(...queue.map(([label, v]) => {
      const tr = document.createElement('tr');
      tr.append(el('td', label), el('td', fmtInt(v || 0), 'num'));
      return tr;
    }));
  }

  function renderFrontDoor(f) {
    const list = [['requests over the rate limit (429)', f.rate_limited],
      ['connections over the per-client limit', f.connections_refused],
      ['connections from an untrusted PROXY peer', f.proxy_untrusted],
      ['connections with a bad or late PROXY header', f.proxy_header],
      ['clients tracked now', f.clients_tracked]];
    $('frontdoor').tBodies[0].replaceChildren(...list.map(([label, v]) => {
      const tr = document.createElement('tr');
      tr.append(el('td', label), el('td', fmtInt(v || 0), 'num'));
      return tr;
    }));
  }

  // renderCerts lists the served certificates with the days left at the
  // status time; under 14 days (a renewal that keeps failing, a file nobody
  // replaced) the count is a red badge.
  function renderCerts(list, now) {
    $('certs').tBodies[0].replaceChildren(...list.map((c) => {
      const end = Date.parse(c.not_after);
      const days = Math.floor((end - now) / 86400000);
      const tr = document.createElement('tr');
      const left = el('td', null, 'num');
      left.append(days < 14 ? el('span', fmtInt(days), 'badge down') : document.createTextNode(fmtInt(days)));
      tr.append(el('td', c.name), el('td', new Date(end).toISOString().slice(0, 16).replace('T', ' ') + ' UTC'), left);
      return tr;
    }));
  }

  // sparkline returns fig's sparkline svg (one polyline), made on first use.
  function sparkline(fig) {
    let svg = fig.querySelector('svg');
    if (!svg) {
      svg = document.createElementNS(SVG_NS, 'svg');
      svg.setAttribute('viewBox', '0 0 100 30');
      svg.setAttribute('preserveAspectRatio', 'none');
      svg.setAttribute('aria-hidden', 'true');
      svg.append(document.createElementNS(SVG_NS, 'polyline'));
      fig.append(svg);
    }
    return svg;
  }

  // sparkPoints maps the history of one figure onto a 100x30 box, time on x.
  function sparkPoints(key, now) {
    const pts = history.filter((p) => p[key] !== null);
    const max = Math.max(1e-9, ...pts.map((p) => p[key]));
    return pts.map((p) => {
      const x = 100 - ((now - p.t) / WINDOW_MS) * 100;
      const y = 29 - (p[key] / max) * 27;
      return x.toFixed(2) + ',' + y.toFixed(2);
    }).join(' ');
  }

  // Pool: counts over time, one point per scan.
  const poolHistory = []; // {t, sessions, active}

  function renderPool(p) {
    $('pool-card').hidden = false;
    if (!p) return;
    const t = Date.parse(p.scanned_at);
    if (!poolHistory.length || poolHistory[poolHistory.length - 1].t !== t) {
      poolHistory.push({ t, sessions: p.sessions, active: (p.active || {})['5m'] });
      while (poolHistory.length > MAX_POINTS) poolHistory.shift();
    }
    $('pool-scanned').textContent = 'scanned ' + new Date(t).toLocaleTimeString() + ' in ' +
      (p.scan_seconds || 0).toFixed(2) + ' s' + (p.sampled ? ' (estimated from a sample)' : '');
    const a = p.active || {};
    const figs = [['pool-sessions', p.sessions, fmtInt(p.with_data) + ' with data · ' + fmtInt(p.incomplete) + ' incomplete', 'sessions'],
      ['pool-active', a['5m'], fmtInt(a['1m']) + ' in 1 min · ' + fmtInt(a['15m']) + ' in 15 min', 'active']];
    for (const [id, v, total, key] of figs) {
      const fig = $('fig-' + id);
      fig.querySelector('.value').textContent = fmtInt(v);
      fig.querySelector('.total').textContent = total;
      const svg = sparkline(fig);
      const max = Math.max(1, ...poolHistory.map((q) => q[key] || 0));
      const n = poolHistory.length;
      svg.firstChild.setAttribute('points', poolHistory.map((q, i) =>
        (n === 1 ? 100 : (i / (n - 1)) * 100).toFixed(2) + ',' + (29 - ((q[key] || 0) / max) * 27).toFixed(2)).join(' '));
    }
    const nodes = Object.keys(p.per_node || {}).sort().map((addr) => {
      const n = p.per_node[addr];
      const tr = document.createElement('tr');
      tr.append(el('td', addr, 'name'), el('td', n.error ? 'not scanned' : fmtInt(n.sessions), 'num'),
        el('td', fmtInt(n.with_data), 'num'), el('td', fmtInt(n.locks), 'num'), el('td', fmtInt(n.other), 'num'));
      if (n.error) tr.title = n.error;
      return tr;
    });
    fillTable($('pool-nodes'), nodes);
    const largest = (p.largest || []).map((l) => {
      const tr = document.createElement('tr');
      tr.append(el('td', l.session), el('td', fmtInt(l.bytes), 'num'));
      return tr;
    });
    if (!largest.length) largest.push(emptyRow('No session holds data', 2));
    fillTable($('pool-largest'), largest);
    const r = p.resync;
    $('pool-resync').hidden = !r;
    if (r) {
      const bar = $('pool-resync').querySelector('progress');
      bar.max = Math.max(1, r.total);
      bar.value = r.done;
      $('pool-resync').querySelector('span').textContent = (r.running ? 'Resyncing ' : 'Last resync of ') + r.node + ': ' +
        fmtInt(r.done) + ' / ' + fmtInt(r.total) + ' looked at, ' + fmtInt(r.copied) + ' copied, ' +
        fmtRate(r.rate) + '/s' + (r.error ? ' — ' + r.error : '');
    }
  }

  function poolSay(text, isError) {
    const m = $('pool-msg');
    m.textContent = text;
    m.className = isError ? 'error' : '';
  }

  // api calls an admin endpoint with the token (asked for once); it
  // returns the decoded body, or null after saying what went wrong.
  async function api(method, path, say) {
    if (!adminToken) {
      adminToken = window.prompt('Admin token (kept in this page only):');
      if (!adminToken) return null;
    }
    const res = await fetch(path, { method, headers: { Authorization: 'Bearer ' + adminToken }, cache: 'no-store' });
    const body = res.status === 204 ? {} : await res.json().catch(() => ({}));
    if (res.status === 401) {
      adminToken = null;
      say('Wrong admin token; try again to enter it.', true);
      return null;
    }
    if (!res.ok) {
      say(body.error || 'HTTP ' + res.status, true);
      return null;
    }
    return body;
  }

  function killButton(id, label, after) {
    const b = el('button', label || 'Kill', 'danger');
    b.type = 'button';
    b.addEventListener('click', async () => {
      try {
        if (await api('DELETE', 'api/sessions/' + encodeURIComponent(id), poolSay)) {
          poolSay('Session killed on every instance.', false);
          if (after) after();
        }
      } catch (e) { poolSay(e.message, true); }
    });
    return b;
  }

  async function findSession() {
    const id = $('pool-q').value.trim();
    if (!id) return;
    const d = await api('GET', 'api/sessions/' + encodeURIComponent(id) + '?decode=1', poolSay);
    if (!d) return;
    const pre = el('pre', JSON.stringify(d.data, null, 2));
    const head = el('p', 'Session on ' + d.node + ': ' + fmtInt(d.bytes) + ' bytes, ' + d.ttl + ' s left' +
      (d.user !== undefined ? ', user ' + d.user : ''));
    head.append(' ', killButton(id, 'Kill this session', () => $('pool-result').replaceChildren()));
    $('pool-result').replaceChildren(head, pre);
    poolSay('', false);
  }

  async function findUser() {
    const user = $('pool-q').value.trim();
    if (!user) return;
    const path = 'api/users/' + encodeURIComponent(user) + '/sessions';
    const d = await api('GET', path, poolSay);
    if (!d) return;
    const table = el('table');
    const tb = el('tbody');
    for (const s of d.sessions) {
      const tr = document.createElement('tr');
      const act = el('td');
      act.append(killButton(s.id, 'Kill', () => tr.remove()));
      tr.append(el('td', s.id, 'name'), el('td', fmtInt(s.bytes) + ' B', 'num'), el('td', (s.nodes || []).length + ' nodes', 'num'),
        el('td', s.locked ? 'locked' : ''), act);
      tb.append(tr);
    }
    table.append(tb);
    const out = el('button', 'Log user ' + user + ' out everywhere', 'danger');
    out.type = 'button';
    out.addEventListener('click', async () => {
      try {
        const r = await api('DELETE', path, poolSay);
        if (r) { poolSay(fmtInt(r.killed) + ' sessions of user ' + user + ' killed.', false); tb.replaceChildren(); }
      } catch (e) { poolSay(e.message, true); }
    });
    $('pool-result').replaceChildren(el('p', d.sessions.length + ' sessions of user ' + user + (d.next ? ' (more exist)' : '')), table, out);
    poolSay('', false);
  }

  const guard = (fn) => () => fn().catch((e) => poolSay(e.message, true));
  $('pool-find-id').addEventListener('click', guard(findSession));
  $('pool-find-user').addEventListener('click', guard(findUser));
  $('pool-scan').addEventListener('click', guard(async () => {
    poolSay('Scanning…', false);
    const p = await api('POST', 'api/pool/scan', poolSay);
    if (p) { renderPool(p); poolSay('Scanned: ' + fmtInt(p.sessions) + ' sessions.', false); }
  }));
  $('pool-all-out').addEventListener('click', guard(async () => {
    if (!window.confirm('Log every user out: kill every session in the pool?')) return;
    const r = await api('DELETE', 'api/sessions?all=yes', poolSay);
    if (r) poolSay(fmtInt(r.killed) + ' sessions killed.', false);
  }));

  function render(st) {
    const t = Date.parse(st.time);
    const dt = prev ? (t - Date.parse(prev.time)) / 1000 : 0;
    $('version').textContent = st.version ? 'version ' + st.version : '';
    renderBackends(st.backends || [], prev && prev.backends, dt);
    const hasSessions = st.sessions !== null && st.sessions !== undefined;
    $('sessions-card').hidden = !hasSessions;
    $('nodes-card').hidden = !hasSessions && !(st.nodes || []).length;
    $('nosession').hidden = hasSessions;
    renderNodes(st.nodes || []);
    $('frontdoor-card').hidden = !st.front_door;
    if (st.front_door) renderFrontDoor(st.front_door);
    $('certs-card').hidden = !(st.certificates || []).length;
    renderCerts(st.certificates || [], t);
    if (hasSessions) renderSessions(st.sessions, prev && prev.sessions, dt, t);
    if (hasSessions) renderPool(st.pool);
    else $('pool-card').hidden = true;
    $('updated').textContent = new Date(t).toLocaleTimeString();
    prev = st;
  }

  function setConn(ok, text) {
    const c = $('conn');
    c.textContent = text;
    c.className = 'badge ' + (ok ? 'up' : 'down');
  }

  async function poll() {
    try {
      const res = await fetch('api/status', { cache: 'no-store' });
      if (!res.ok) throw new Error('status HTTP ' + res.status);
      render(await res.json());
      setConn(true, 'live');
    } catch (e) {
      setConn(false, 'disconnected: ' + e.message);
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  // act sends a backend admin action with the token (see api).
  async function act(name, action) {
    try {
      const body = await api('POST', 'api/backends/' + encodeURIComponent(name) + '/' + action, say);
      if (body) say(name + ' is now ' + (body.state || action), false);
    } catch (e) {
      say(e.message, true);
    }
  }

  poll();
})();
