// hinter's dashboard: one page, hash routes, the JSON API through fetch, live updates from
// the event stream. No framework and no build step; served by the binary (dashboard.rs).
'use strict';

const STATES = ['scheduled', 'queued', 'running', 'succeeded', 'dead', 'cancelled'];
const FINISHED = ['succeeded', 'dead', 'cancelled'];

const app = {
  session: null,        // GET /ui/session
  route: null,          // {page, id}
  refreshTimer: null,
  events: null,         // EventSource
  chartWindow: '1h',    // the overview's charts: '1h' or '1d' (GET /api/v1/stats?window=)
  chartQueue: '',       // '' for every queue
};

// ---- DOM helpers (no innerHTML: every value is text) ----

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'class') el.className = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function svg(tag, attrs) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
  return el;
}

function pretty(value) {
  return value === null || value === undefined ? '—' : JSON.stringify(value, null, 2);
}

function ago(iso) {
  if (!iso) return '—';
  const seconds = Math.round((Date.now() - Date.parse(iso)) / 1000);
  const abs = Math.abs(seconds);
  const text = abs < 60 ? `${abs}s` : abs < 3600 ? `${Math.floor(abs / 60)}m ${abs % 60}s`
    : abs < 86400 ? `${Math.floor(abs / 3600)}h ${Math.floor((abs % 3600) / 60)}m`
      : `${Math.floor(abs / 86400)}d ${Math.floor((abs % 86400) / 3600)}h`;
  return seconds >= 0 ? `${text} ago` : `in ${text}`;
}

function time(iso) {
  return iso ? h('time', { datetime: iso, title: iso }, ago(iso)) : '—';
}

function badge(state) {
  return h('span', { class: `badge state-${state}`, 'data-state': state }, state);
}

function flash(message, kind) {
  const el = document.getElementById('flash');
  el.textContent = message;
  el.className = `flash ${kind || 'error'}`;
  el.hidden = !message;
  if (message && kind === 'ok') setTimeout(() => { if (el.textContent === message) el.hidden = true; }, 4000);
}

function isAdmin() {
  return !!app.session && (app.session.scopes || []).includes('admin');
}

// ---- API ----

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(path, options) {
  const opts = Object.assign({ method: 'GET', credentials: 'same-origin', headers: {} }, options || {});
  if (opts.method !== 'GET' && app.session && app.session.csrf) {
    opts.headers['X-CSRF-Token'] = app.session.csrf;
  }
  if (opts.json !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(opts.json);
  }
  const response = await fetch(path, opts);
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  if (!response.ok) {
    const error = body && body.error ? body.error : { code: 'http', message: `${response.status} ${text}` };
    if (response.status === 401) showLogin(error.message);
    throw new ApiError(response.status, error.code, error.message);
  }
  return body;
}

async function act(label, path, options) {
  try {
    await api(path, Object.assign({ method: 'POST' }, options || {}));
    flash(`${label}: done`, 'ok');
  } catch (e) {
    flash(`${label}: ${e.message}`);
  }
  render();
}

// ---- session ----

async function loadSession() {
  app.session = await api('/ui/session');
  const who = document.getElementById('who');
  who.textContent = '';
  if (!app.session.authenticated) return false;
  if (app.session.open) {
    who.append(h('span', { title: 'no token exists: the API is open on this address' }, 'open (no tokens)'));
  } else {
    who.append(h('span', { id: 'who-name' }, `${app.session.name} · ${(app.session.scopes || []).join(', ')}`),
      ' ', h('button', { class: 'link', id: 'logout', onclick: logout }, 'Log out'));
  }
  document.body.classList.toggle('admin', isAdmin());
  return true;
}

function showLogin(message) {
  document.getElementById('login').hidden = false;
  document.getElementById('main').hidden = true;
  if (message) flash(message);
}

async function login(event) {
  event.preventDefault();
  const token = document.getElementById('login-token').value.trim();
  try {
    const body = new URLSearchParams({ token });
    app.session = await api('/ui/login', { method: 'POST', body });
    document.getElementById('login-token').value = '';
    document.getElementById('login').hidden = true;
    document.getElementById('main').hidden = false;
    flash('');
    await start();
  } catch (e) {
    flash(`Log in: ${e.message}`);
  }
}

async function logout() {
  try { await api('/ui/logout', { method: 'POST' }); } catch (_) { /* logged out anyway */ }
  if (app.events) app.events.close();
  app.events = null;
  app.session = null;
  document.body.classList.remove('admin');
  document.getElementById('who').textContent = '';
  showLogin('');
}

// ---- live: one EventSource on the event log ----

// On a job's page, that job's events (its progress moves the bar at once); elsewhere, one
// summary a second at most: counts and lists are read anew on a change anyway, so a busy
// server does not send every event to an open page.
function eventsUrl() {
  const route = parseRoute();
  if (route.page === 'job') return `/api/v1/events?job_id=${encodeURIComponent(route.id)}`;
  return '/api/v1/events?every=1s';
}

function connectEvents() {
  const url = eventsUrl();
  if (app.events && app.eventsUrl === url && app.events.readyState !== EventSource.CLOSED) return;
  if (app.events) app.events.close();
  // A token limited to queues follows all of its queues (the server cuts the stream to them).
  const source = new EventSource(url, { withCredentials: true });
  const live = document.getElementById('live');
  source.onopen = () => { live.classList.add('on'); live.title = 'live: following the event stream'; };
  source.onerror = () => { live.classList.remove('on'); live.title = 'live updates interrupted; reconnecting'; };
  const handle = (message) => {
    let entry;
    try { entry = JSON.parse(message.data); } catch (_) { return; }
    if (message.type === 'summary') entry.kind = 'summary';
    onEvent(entry);
  };
  for (const kind of ['created', 'started', 'progress', 'succeeded', 'failed', 'retry_scheduled',
    'dead', 'cancelled', 'cancel_requested', 'released', 'rescued', 'retried', 'promoted', 'deleted',
    'summary']) {
    source.addEventListener(kind, handle);
  }
  source.onmessage = handle;
  app.events = source;
  app.eventsUrl = url;
}

function onEvent(entry) {
  const route = app.route || {};
  if (route.page === 'job' && entry.job_id === route.id) {
    // Progress moves the bar at once; the rest of the page (log lines, state, runs)
    // follows shortly after.
    if (entry.kind === 'progress' && entry.data) setProgress(entry.data);
    scheduleRefresh(entry.kind === 'progress' ? 1000 : 200);
    appendTimeline(entry);
    return;
  }
  // A summary comes at most once a second: refresh at once.
  if (route.page === 'overview' || route.page === 'jobs' || route.page === 'dead') {
    scheduleRefresh(entry.kind === 'summary' ? 100 : 1000);
  }
}

function scheduleRefresh(delay) {
  if (app.refreshTimer) return;
  app.refreshTimer = setTimeout(() => { app.refreshTimer = null; render(true); }, delay);
}

// ---- routing ----

function parseRoute() {
  const hash = location.hash.replace(/^#/, '') || '/';
  const [path, query] = hash.split('?');
  const parts = path.split('/').filter(Boolean);
  const params = new URLSearchParams(query || '');
  if (parts[0] === 'jobs' && parts[1]) return { page: 'job', id: decodeURIComponent(parts[1]), params };
  const page = { jobs: 'jobs', dead: 'dead', workers: 'workers', schedules: 'schedules' }[parts[0]] || 'overview';
  return { page, params };
}

let rendering = 0;
async function render(quiet) {
  const route = parseRoute();
  const samePage = app.route && app.route.page === route.page && app.route.id === route.id;
  app.route = route;
  for (const link of document.querySelectorAll('#nav a')) {
    link.classList.toggle('current', link.dataset.page === (route.page === 'job' ? 'jobs' : route.page));
  }
  const main = document.getElementById('main');
  // A refresh does not take the field someone is typing in away from them.
  const active = document.activeElement;
  if (quiet && samePage && main.contains(active) && ['INPUT', 'SELECT', 'TEXTAREA'].includes(active.tagName)
    && active.type !== 'checkbox') return;
  const ticket = ++rendering;
  if (!quiet && !samePage) main.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
  try {
    const view = await PAGES[route.page](route);
    if (ticket !== rendering) return;
    const scroll = window.scrollY;
    // Selected rows stay selected across a refresh.
    const picked = new Set([...main.querySelectorAll('input.pick:checked')].map((c) => c.value));
    main.replaceChildren(view);
    main.dataset.page = route.page;
    if (samePage) {
      for (const box of main.querySelectorAll('input.pick')) box.checked = picked.has(box.value);
      window.scrollTo(0, scroll);
    }
  } catch (e) {
    if (ticket !== rendering) return;
    main.replaceChildren(h('p', { class: 'error-text' }, `Could not load: ${e.message}`));
  }
}

// ---- pages ----

function sum(values) {
  return values.reduce((n, v) => n + v, 0);
}

function clock(date, withDay) {
  const opts = { hour: '2-digit', minute: '2-digit' };
  if (withDay) Object.assign(opts, { weekday: 'short' });
  return date.toLocaleTimeString([], opts);
}

// A bar chart of one or two series (the second drawn over the first, e.g. dead over failed),
// as inline SVG: presentation attributes and classes only (the CSP allows no inline style).
// Each bar has a <title> (its time span and counts); the chart says its sums in data-*.
function barChart(id, title, stats, layers) {
  const n = layers[0].values.length;
  const barWidth = 10, height = 100;
  const max = Math.max(1, ...layers.flatMap((l) => l.values));
  const from = Date.parse(stats.from);
  const step = stats.step_seconds * 1000;
  const chart = svg('svg', {
    id, class: 'chart', viewBox: `0 0 ${n * barWidth} ${height}`, preserveAspectRatio: 'none',
    role: 'img', 'aria-label': `${title}: ${layers.map((l) => `${sum(l.values)} ${l.label}`).join(', ')}`,
  });
  for (const layer of layers) chart.setAttribute(`data-${layer.label}`, String(sum(layer.values)));
  chart.setAttribute('data-buckets', String(n));
  chart.append(svg('line', { class: 'axis', x1: 0, y1: height - 0.5, x2: n * barWidth, y2: height - 0.5, 'vector-effect': 'non-scaling-stroke' }));
  for (let i = 0; i < n; i += 1) {
    const counts = layers.map((l) => l.values[i]);
    if (counts.every((v) => v === 0)) continue;
    const start = new Date(from + i * step), end = new Date(from + (i + 1) * step);
    const group = svg('g', { class: 'bar', 'data-bucket': i, 'data-at': start.toISOString() });
    const label = svg('title', {});
    label.textContent = `${clock(start, stats.window === '1d')}–${clock(end)}: ${layers.map((l, k) => `${counts[k]} ${l.label}`).join(', ')}`;
    group.append(label);
    for (const [k, layer] of layers.entries()) {
      const v = counts[k];
      if (v === 0) continue;
      const h2 = Math.max(1.5, (v / max) * (height - 4));
      group.append(svg('rect', { class: layer.cls, x: i * barWidth + 1, y: height - h2, width: barWidth - 2, height: h2 }));
    }
    chart.append(group);
  }
  const first = new Date(from), last = new Date(Date.parse(stats.to));
  return h('figure', { class: 'chart-box' },
    h('figcaption', {}, h('span', { class: 'chart-title' }, title), ' ',
      layers.map((l) => h('span', { class: `legend ${l.cls}` }, `${sum(l.values)} ${l.label}`)),
      h('span', { class: 'muted chart-max' }, `max ${max} per ${stats.step_seconds === 60 ? 'minute' : '10 minutes'}`)),
    chart,
    h('div', { class: 'chart-axis muted' }, h('span', {}, clock(first, stats.window === '1d')), h('span', {}, 'now')));
}

function rateCard(title, values, id) {
  const current = values.length ? values[values.length - 1] : 0;
  const previous = values.length > 1 ? values[values.length - 2] : 0;
  return h('div', { class: 'card' },
    h('div', { class: 'card-title' }, title),
    h('div', { class: 'card-value', id }, String(current)),
    h('div', { class: 'muted' }, `this minute · ${previous} the minute before`));
}

function seriesOf(stats, queue) {
  if (!queue) return stats.total;
  const found = (stats.queues || []).find((q) => q.name === queue);
  const zeros = () => stats.total.succeeded.map(() => 0);
  return found || { succeeded: zeros(), failed: zeros(), dead: zeros(), cancelled: zeros() };
}

function charts(stats, queueNames) {
  if (stats.error) return h('p', { class: 'error-text' }, `Charts: ${stats.error}`);
  const pick = (w, label) => h('button', {
    id: `chart-window-${w}`, class: 'toggle', 'aria-pressed': app.chartWindow === w ? 'true' : 'false',
    onclick: () => { app.chartWindow = w; render(); },
  }, label);
  const names = [...new Set([...queueNames, ...(stats.queues || []).map((q) => q.name), app.chartQueue].filter(Boolean))].sort();
  const select = h('select', { id: 'chart-queue', 'aria-label': 'queue of the charts', onchange: (e) => { app.chartQueue = e.target.value; render(); } },
    h('option', { value: '' }, 'every queue'),
    names.map((n) => h('option', { value: n, selected: n === app.chartQueue }, n)));
  const series = seriesOf(stats, app.chartQueue);
  const since = stats.data_from ? h('p', { class: 'muted', id: 'chart-data-from' },
    `Counted from ${new Date(Date.parse(stats.data_from)).toLocaleString()} on: the event log is being read back, or keeps nothing older.`) : null;
  return h('section', { id: 'charts', 'data-window': stats.window, 'data-queue': app.chartQueue },
    h('div', { class: 'chart-head' }, h('h2', {}, 'Throughput'),
      h('div', { class: 'segmented', role: 'group', 'aria-label': 'time window' }, pick('1h', '1 h'), pick('1d', '24 h')),
      select),
    since,
    h('div', { class: 'charts' },
      barChart('chart-succeeded', 'Succeeded', stats, [{ label: 'succeeded', cls: 'succeeded', values: series.succeeded }]),
      barChart('chart-failures', 'Failures', stats, [
        { label: 'failed', cls: 'failed', values: series.failed },
        { label: 'dead', cls: 'dead', values: series.dead }])));
}

async function overview() {
  // The cards count per minute (the hour's buckets); the charts show the chosen window.
  const soft = (path) => api(path).catch((e) => ({ error: e.message }));
  const [{ queues }, hour, day] = await Promise.all([api('/api/v1/queues'), soft('/api/v1/stats?window=1h'),
    app.chartWindow === '1d' ? soft('/api/v1/stats?window=1d') : Promise.resolve(null)]);
  const perMinute = hour.error ? { succeeded: [], failed: [] } : hour.total;
  const admin = isAdmin();
  const rows = queues.map((q) => h('tr', { 'data-queue': q.name },
    h('th', { scope: 'row' }, h('a', { href: `#/jobs?queue=${encodeURIComponent(q.name)}` }, q.name)),
    h('td', { class: 'flag' }, q.paused ? h('span', { class: 'badge paused', 'data-paused': 'true' }, 'paused')
      : h('span', { class: 'badge active', 'data-paused': 'false' }, 'active')),
    STATES.map((s) => h('td', { class: 'num', 'data-state': s },
      h('a', { href: `#/jobs?queue=${encodeURIComponent(q.name)}&state=${s}` }, String(q[s] ?? 0)))),
    h('td', { class: 'age' }, q.oldest_queued_at ? ago(q.oldest_queued_at).replace(' ago', '') : '—'),
    admin ? h('td', { class: 'actions' }, q.paused
      ? h('button', { 'data-action': 'resume', 'data-queue': q.name, onclick: () => act(`Resume ${q.name}`, `/api/v1/queues/${encodeURIComponent(q.name)}/resume`) }, 'Resume')
      : h('button', { 'data-action': 'pause', 'data-queue': q.name, onclick: () => act(`Pause ${q.name}`, `/api/v1/queues/${encodeURIComponent(q.name)}/pause`) }, 'Pause'))
      : null));
  const totals = Object.fromEntries(STATES.map((s) => [s, queues.reduce((n, q) => n + (q[s] || 0), 0)]));
  return h('div', {},
    h('h1', {}, 'Overview'),
    h('div', { class: 'cards' },
      h('div', { class: 'card' }, h('div', { class: 'card-title' }, 'Queued'), h('div', { class: 'card-value', id: 'total-queued' }, String(totals.queued))),
      h('div', { class: 'card' }, h('div', { class: 'card-title' }, 'Running'), h('div', { class: 'card-value', id: 'total-running' }, String(totals.running))),
      h('div', { class: 'card' }, h('div', { class: 'card-title' }, 'Dead'), h('div', { class: 'card-value', id: 'total-dead' }, h('a', { href: '#/dead' }, String(totals.dead)))),
      rateCard('Succeeded per minute', perMinute.succeeded, 'rate-ok'),
      rateCard('Failures per minute', perMinute.failed, 'rate-failed')),
    charts(day || hour, queues.map((q) => q.name)),
    h('h2', {}, 'Queues'),
    queues.length === 0 ? h('p', { class: 'muted' }, 'No queue has jobs yet.') :
      h('div', { class: 'scroll' }, h('table', { id: 'queues' },
        h('thead', {}, h('tr', {}, h('th', {}, 'Queue'), h('th', {}, 'State'), STATES.map((s) => h('th', { class: 'num' }, s)),
          h('th', {}, 'Oldest queued'), admin ? h('th', {}, '') : null)),
        h('tbody', {}, rows))));
}

function jobRow(job, selectable) {
  return h('tr', { 'data-job': job.id },
    selectable ? h('td', {}, h('input', { type: 'checkbox', class: 'pick', value: job.id, 'aria-label': `select ${job.id}` })) : null,
    h('td', { class: 'mono' }, h('a', { href: `#/jobs/${job.id}` }, job.id)),
    h('td', {}, job.job), h('td', {}, job.queue), h('td', {}, badge(job.state)),
    h('td', { class: 'num' }, `${job.attempt}/${job.max_attempts}`),
    h('td', {}, job.progress && job.state === 'running' ? `${Math.round(job.progress.percent ?? 0)}%` : ''),
    h('td', {}, time(job.created_at)),
    h('td', { class: 'error-text clip' }, job.last_error ? job.last_error.message : ''));
}

const JOB_HEAD = ['Id', 'Job', 'Queue', 'State', 'Attempt', 'Progress', 'Created', 'Last error'];

// A token limited to queues sees all of them without a queue filter (the API cuts listings
// to its queues), and one of them with it.
function queueFilter(params) {
  return params.get('queue') || '';
}

async function jobs(route) {
  const p = route.params;
  const queue = queueFilter(p);
  const query = new URLSearchParams({ limit: '50' });
  for (const [key, value] of [['state', p.get('state')], ['queue', queue], ['job', p.get('job')], ['cursor', p.get('cursor')]]) {
    if (value) query.set(key, value);
  }
  const page = await api(`/api/v1/jobs?${query}`);
  const form = h('form', { class: 'filters', id: 'job-filters', onsubmit: (e) => {
    e.preventDefault();
    const data = new FormData(e.target);
    const id = (data.get('id') || '').trim();
    if (id) { location.hash = `#/jobs/${encodeURIComponent(id)}`; return; }
    const next = new URLSearchParams();
    for (const key of ['state', 'queue', 'job']) if (data.get(key)) next.set(key, data.get(key));
    location.hash = `#/jobs?${next}`;
  } },
  h('label', {}, 'State ', h('select', { name: 'state' }, h('option', { value: '' }, 'any'),
    STATES.map((s) => h('option', { value: s, selected: p.get('state') === s }, s)))),
  h('label', {}, 'Queue ', h('input', { name: 'queue', value: queue, placeholder: 'any' })),
  h('label', {}, 'Job ', h('input', { name: 'job', value: p.get('job') || '', placeholder: 'any' })),
  h('label', {}, 'Id ', h('input', { name: 'id', id: 'job-search', placeholder: 'job id', class: 'mono' })),
  h('button', { type: 'submit' }, 'Show'));
  const next = new URLSearchParams(p);
  if (page.next_cursor) next.set('cursor', page.next_cursor);
  return h('div', {}, h('h1', {}, 'Jobs'), form,
    page.jobs.length === 0 ? h('p', { class: 'muted' }, 'No job matches.') :
      h('div', { class: 'scroll' }, h('table', { id: 'jobs' },
        h('thead', {}, h('tr', {}, JOB_HEAD.map((t) => h('th', {}, t)))),
        h('tbody', {}, page.jobs.map((j) => jobRow(j, false))))),
    page.next_cursor ? h('p', {}, h('a', { href: `#/jobs?${next}` }, 'Next page →')) : null);
}

function setProgress(progress) {
  const bar = document.getElementById('job-progress');
  if (!bar || !progress) return;
  const percent = Math.max(0, Math.min(100, Number(progress.percent ?? 0)));
  bar.querySelector('.fill').style.width = `${percent}%`;
  bar.querySelector('.label').textContent = `${Math.round(percent)}%${progress.message ? ' · ' + progress.message : ''}`;
  bar.dataset.percent = String(Math.round(percent));
}

function timelineItem(entry) {
  const data = entry.data ? JSON.stringify(entry.data) : '';
  return h('li', { 'data-event': entry.id }, h('span', { class: 'mono muted' }, entry.at), ' ', badge(entry.kind),
    ` attempt ${entry.attempt}`, data ? h('span', { class: 'mono' }, ` ${data}`) : null);
}

function appendTimeline(entry) {
  const list = document.getElementById('timeline');
  if (list && !list.querySelector(`[data-event="${entry.id}"]`)) list.append(timelineItem(entry));
}

async function jobDetail(route) {
  const id = encodeURIComponent(route.id);
  const [job, logs, events] = await Promise.all([
    api(`/api/v1/jobs/${id}`),
    api(`/api/v1/jobs/${id}/logs`).catch(() => ({ lines: [] })),
    api(`/api/v1/events?job_id=${id}&limit=1000`).catch(() => ({ events: [] })),
  ]);
  const admin = isAdmin();
  const actions = admin ? h('div', { class: 'actions' },
    ['scheduled', 'queued', 'running'].includes(job.state) && !job.cancel_requested
      ? h('button', { id: 'job-cancel', onclick: () => act('Cancel', `/api/v1/jobs/${id}/cancel`) }, 'Cancel') : null,
    ['dead', 'cancelled'].includes(job.state)
      ? h('button', { id: 'job-retry', onclick: () => act('Retry', `/api/v1/jobs/${id}/retry`) }, 'Retry') : null,
    FINISHED.includes(job.state)
      ? h('button', { id: 'job-delete', class: 'danger', onclick: async () => {
        if (!window.confirm('Delete this job, its runs and log lines?')) return;
        try { await api(`/api/v1/jobs/${id}`, { method: 'DELETE' }); flash('Deleted', 'ok'); location.hash = '#/jobs'; } catch (e) { flash(`Delete: ${e.message}`); }
      } }, 'Delete') : null) : null;
  const progress = job.progress || (job.state === 'succeeded' ? { percent: 100 } : null);
  const bar = h('div', { class: 'progress', id: 'job-progress' }, h('div', { class: 'fill' }), h('span', { class: 'label' }, 'no progress reported'));
  const fields = [
    ['Job', job.job], ['Queue', job.queue], ['Attempt', `${job.attempt} of ${job.max_attempts}`], ['Priority', job.priority],
    ['Created', job.created_at], ['Run at', job.run_at], ['Started', job.started_at], ['Finished', job.finished_at],
    ['Worker', job.worker_id], ['Lease until', job.lease_expires_at], ['Unique key', job.unique_key], ['Ordering key', job.ordering_key],
    ['Parent', job.parent_id], ['Cancel requested', job.cancel_requested ? 'yes' : null],
  ].filter(([, v]) => v !== null && v !== undefined && v !== '');
  const view = h('div', {},
    h('p', {}, h('a', { href: '#/jobs' }, '← Jobs')),
    h('h1', {}, `${job.job} `, h('span', { id: 'job-state' }, badge(job.state))),
    h('p', { class: 'mono muted', id: 'job-id' }, job.id),
    actions, bar,
    h('dl', { class: 'fields' }, fields.map(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v))])),
    h('div', { class: 'two' },
      h('section', {}, h('h2', {}, 'Payload'), h('pre', { id: 'job-payload' }, pretty(job.payload))),
      h('section', {}, h('h2', {}, 'Result'), h('pre', { id: 'job-result' }, pretty(job.result)))),
    job.checkpoint ? h('section', {}, h('h2', {}, 'Checkpoint'), h('pre', {}, pretty(job.checkpoint))) : null,
    h('h2', {}, 'Attempts'),
    (job.runs || []).length === 0 ? h('p', { class: 'muted' }, 'Not run yet.') :
      h('div', { class: 'scroll' }, h('table', { id: 'runs' },
        h('thead', {}, h('tr', {}, ['#', 'Worker', 'Started', 'Finished', 'Outcome', 'Exit', 'Duration', 'Error'].map((t) => h('th', {}, t)))),
        h('tbody', {}, job.runs.map((r) => h('tr', {}, h('td', {}, r.attempt), h('td', { class: 'mono' }, r.worker_id || ''),
          h('td', {}, r.started_at || ''), h('td', {}, r.finished_at || 'running'), h('td', {}, r.outcome ? badge(r.outcome) : ''),
          h('td', {}, r.exit_code ?? ''), h('td', {}, r.duration_ms !== null && r.duration_ms !== undefined ? `${r.duration_ms} ms` : ''),
          h('td', { class: 'error-text' }, r.error || '')))))),
    (job.errors || []).length ? [h('h2', {}, 'Errors'), h('ol', { class: 'errors' },
      job.errors.map((e) => h('li', {}, h('span', { class: 'muted' }, `attempt ${e.attempt} · ${e.at} `), h('pre', { class: 'error-text' }, e.message))))] : null,
    h('h2', {}, 'Log'),
    logs.lines.length === 0 ? h('p', { class: 'muted' }, 'No log lines.') :
      h('pre', { class: 'log', id: 'job-log' }, logs.lines.map((l) => `#${l.attempt} ${l.at} ${l.stream}${l.level ? ' ' + l.level : ''}: ${l.line}\n`).join('')),
    (job.followups || []).length ? [h('h2', {}, 'Follow-ups'), h('div', { class: 'scroll' }, h('table', {},
      h('thead', {}, h('tr', {}, JOB_HEAD.map((t) => h('th', {}, t)))), h('tbody', {}, job.followups.map((j) => jobRow(j, false)))))] : null,
    h('h2', {}, 'Timeline'),
    h('ol', { class: 'timeline', id: 'timeline' }, events.events.map(timelineItem)));
  if (progress) setTimeout(() => setProgress(progress), 0);
  return view;
}

async function dead(route) {
  const queue = queueFilter(route.params);
  const query = new URLSearchParams({ state: 'dead', limit: '100' });
  if (queue) query.set('queue', queue);
  const page = await api(`/api/v1/jobs?${query}`);
  const admin = isAdmin();
  const picked = () => [...document.querySelectorAll('#dead input.pick:checked')].map((c) => c.value);
  const many = async (label, ids, method, suffix) => {
    if (ids.length === 0) { flash(`${label}: select jobs first`); return; }
    let failed = 0;
    for (const id of ids) {
      try { await api(`/api/v1/jobs/${encodeURIComponent(id)}${suffix}`, { method }); } catch (_) { failed += 1; }
    }
    flash(failed ? `${label}: ${ids.length - failed} done, ${failed} refused` : `${label}: ${ids.length} done`, failed ? 'error' : 'ok');
    render();
  };
  return h('div', {}, h('h1', {}, 'Dead jobs'),
    admin && page.jobs.length ? h('div', { class: 'actions' },
      h('button', { id: 'dead-retry-selected', onclick: () => many('Retry', picked(), 'POST', '/retry') }, 'Retry selected'),
      h('button', { id: 'dead-retry-all', onclick: () => many('Retry all', page.jobs.map((j) => j.id), 'POST', '/retry') }, `Retry all ${page.jobs.length} listed`),
      h('button', { id: 'dead-delete-selected', class: 'danger', onclick: () => {
        const ids = picked();
        if (ids.length && window.confirm(`Delete ${ids.length} dead job(s)?`)) many('Delete', ids, 'DELETE', '');
      } }, 'Delete selected')) : null,
    page.jobs.length === 0 ? h('p', { class: 'muted' }, 'No dead job.') :
      h('div', { class: 'scroll' }, h('table', { id: 'dead' },
        h('thead', {}, h('tr', {}, admin ? h('th', {}, '') : null, JOB_HEAD.map((t) => h('th', {}, t)))),
        h('tbody', {}, page.jobs.map((j) => jobRow(j, admin))))),
    page.next_cursor ? h('p', { class: 'muted' }, 'More dead jobs exist than are listed here; see Jobs with state dead.') : null);
}

async function workers() {
  const { workers: list } = await api('/api/v1/workers');
  const leader = list.find((w) => w.leader);
  return h('div', {}, h('h1', {}, 'Processes'),
    h('p', { id: 'leader' }, leader ? ['Leader: ', h('strong', { class: 'mono' }, leader.id)] : 'No leader elected right now.'),
    h('div', { class: 'scroll' }, h('table', { id: 'workers' },
      h('thead', {}, h('tr', {}, ['Id', 'Role', 'Host', 'Pid', 'Queues', 'Concurrency', 'Started', 'Last heartbeat', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, list.map((w) => h('tr', { 'data-worker': w.id }, h('td', { class: 'mono' }, w.id), h('td', {}, w.role), h('td', {}, w.host),
        h('td', { class: 'num' }, w.pid), h('td', {}, (w.queues || []).join(', ') || 'any'), h('td', { class: 'num' }, w.concurrency),
        h('td', {}, time(w.started_at)), h('td', {}, time(w.last_heartbeat_at)),
        h('td', {}, w.leader ? h('span', { class: 'badge leader' }, 'leader') : '')))))));
}

async function schedules() {
  const [sched, defs] = await Promise.all([
    api('/api/v1/schedules').catch((e) => ({ error: e.message, schedules: [] })),
    api('/api/v1/definitions').catch((e) => ({ error: e.message, definitions: [] })),
  ]);
  const continuous = defs.definitions.filter((d) => d.kind === 'continuous');
  return h('div', {}, h('h1', {}, 'Schedules'),
    sched.error ? h('p', { class: 'error-text' }, sched.error) : null,
    sched.schedules.length === 0 ? h('p', { class: 'muted' }, 'No schedule.') :
      h('div', { class: 'scroll' }, h('table', { id: 'schedules' },
        h('thead', {}, h('tr', {}, ['Name', 'When', 'Job', 'Queue', 'State', 'Next runs'].map((t) => h('th', {}, t)))),
        h('tbody', {}, sched.schedules.map((s) => h('tr', { 'data-schedule': s.name }, h('td', {}, s.name),
          h('td', { class: 'mono' }, s.cron ? `${s.cron}${s.time_zone ? ' ' + s.time_zone : ''}` : (s.at || '')),
          h('td', {}, s.job), h('td', {}, s.queue || 'default'), h('td', {}, s.paused ? h('span', { class: 'badge paused' }, 'paused') : 'active'),
          h('td', {}, (s.next_fire_times || (s.next_fire_at ? [s.next_fire_at] : [])).slice(0, 3).map((t) => h('div', {}, time(t))))))))),
    h('h2', {}, 'Continuous jobs'),
    defs.error ? h('p', { class: 'error-text' }, defs.error) : null,
    continuous.length === 0 ? h('p', { class: 'muted' }, 'No continuous job on this server.') :
      h('div', { class: 'scroll' }, h('table', { id: 'continuous' },
        h('thead', {}, h('tr', {}, ['Name', 'State', 'Host', 'Pid', 'Restarts', 'Started', 'Last exit'].map((t) => h('th', {}, t)))),
        h('tbody', {}, continuous.map((d) => {
          const s = d.status || {};
          return h('tr', {}, h('td', {}, d.name), h('td', {}, d.error ? h('span', { class: 'error-text' }, d.error) : (s.state || '—')),
            h('td', {}, s.host || ''), h('td', {}, s.pid ?? ''), h('td', {}, s.restarts ?? ''), h('td', {}, time(s.started_at)),
            h('td', {}, s.last_exit ? s.last_exit.message : ''));
        })))),
    h('h2', {}, 'Definitions'),
    defs.definitions.length === 0 ? h('p', { class: 'muted' }, 'No job definition loaded.') :
      h('div', { class: 'scroll' }, h('table', { id: 'definitions' },
        h('thead', {}, h('tr', {}, ['Name', 'Kind', 'Queue', 'Schedule', 'Problem'].map((t) => h('th', {}, t)))),
        h('tbody', {}, defs.definitions.map((d) => h('tr', {}, h('td', {}, d.name), h('td', {}, d.kind),
          h('td', {}, d.settings ? (d.settings.queue || 'default') : ''), h('td', { class: 'mono' }, d.settings && d.settings.schedule ? d.settings.schedule : ''),
          h('td', { class: 'error-text' }, d.error || '')))))));
}

const PAGES = { overview, jobs, job: jobDetail, dead, workers, schedules };

// ---- start ----

async function start() {
  let ok;
  try {
    ok = await loadSession();
  } catch (e) {
    flash(`Cannot reach the server: ${e.message}`);
    return;
  }
  if (!ok) { showLogin(''); return; }
  document.getElementById('login').hidden = true;
  document.getElementById('main').hidden = false;
  connectEvents();
  await render();
}

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('login-form').addEventListener('submit', login);
  window.addEventListener('hashchange', () => {
    if (app.events) connectEvents();
    render();
  });
  // Ages and rates move with the clock; counts move with events (and this, as a fallback).
  setInterval(() => { if (app.session && app.route && app.route.page !== 'job') render(true); }, 10000);
  start();
});
