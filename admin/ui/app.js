// sessiongate dashboard: polls api/status and redraws in place.
// Every value from the server is inserted with textContent or as an SVG
// attribute computed from numbers, never parsed as markup.
'use strict';
(() => {
  const POLL_MS = 1500;
  const WINDOW_MS = 5 * 60 * 1000; // sparkline history kept in memory
  const MAX_POINTS = 400;
  const TOKEN_KEY = 'sessiongate-admin-token';
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
      let svg = fig.querySelector('svg');
      if (!svg) {
        svg = document.createElementNS(SVG_NS, 'svg');
        svg.setAttribute('viewBox', '0 0 100 30');
        svg.setAttribute('preserveAspectRatio', 'none');
        svg.setAttribute('aria-hidden', 'true');
        svg.append(document.createElementNS(SVG_NS, 'polyline'));
        fig.append(svg);
      }
      svg.firstChild.setAttribute('points', sparkPoints(k, t));
    }

    const rows = Object.keys(s.lookups || {}).sort().map((k) => {
      const tr = document.createElement('tr');
      tr.append(el('td', k.replace(/_/g, ' ')), el('td', fmtInt(s.lookups[k]), 'num'));
      return tr;
    });
    const extra = [['held for a restarting node', s.held], ['kills', s.kills]];
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
    if (hasSessions) renderSessions(st.sessions, prev && prev.sessions, dt, t);
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

  // act sends a backend admin action with the token, asked for once and kept
  // in sessionStorage (this tab only).
  async function act(name, action) {
    try {
      let token = sessionStorage.getItem(TOKEN_KEY);
      if (!token) {
        token = window.prompt('Admin token (kept in this tab only):');
        if (!token) return;
        sessionStorage.setItem(TOKEN_KEY, token);
      }
      const res = await fetch('api/backends/' + encodeURIComponent(name) + '/' + action, {
        method: 'POST',
        headers: { Authorization: 'Bearer ' + token },
      });
      const body = await res.json().catch(() => ({}));
      if (res.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        say('Wrong admin token; click again to enter it.', true);
        return;
      }
      if (!res.ok) {
        say(body.error || 'HTTP ' + res.status, true);
        return;
      }
      say(name + ' is now ' + (body.state || action), false);
    } catch (e) {
      say(e.message, true);
    }
  }

  poll();
})();
