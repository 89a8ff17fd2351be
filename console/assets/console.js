// Ringwatch console: reads the admin API of the node that served it (/v1/*,
// /cluster/status) and redraws when /console/live says the replicated state moved.
// No framework, no build step; every value from the API goes into the page as text
// (textContent, SVG attributes), never as markup.
'use strict';

const TOKEN_KEY = 'ringwatch-admin-token';
// Above these sizes the topology shows switches with counts instead of every host.
const DETAIL_MAX_HOSTS = 300;
const DETAIL_MAX_GROUP = 32;
const EVENTS_KEPT = 300;
// Events read per request; a full batch means more are waiting: they are read at once,
// without drawing in between. The first read takes every event the node keeps (10,000,
// about 2 MB at 10,000 hosts) in one request rather than ten.
const EVENTS_BATCH = 1000;
const EVENTS_FIRST_BATCH = 10000;
// Hosts, rings and the topology are re-read when events moved, but not sooner after the
// last read than this many times its duration (at 10,000 hosts /v1/hosts is megabytes),
// and at most this long apart when events keep moving.
const TABLES_GAP_FACTOR = 3;
const TABLES_GAP_MAX_MS = 5000;
const TABLES_EVERY_MS = 30000;
const CLOSED_SHOWN = 20;
const SVG_NS = 'http://www.w3.org/2000/svg';

const S = {
  token: sessionStorage.getItem(TOKEN_KEY),
  tick: null,
  cluster: null,
  status: null,
  failures: [],
  hosts: [],
  hostsById: new Map(),
  rings: [],
  topology: null,
  events: [],
  lastEventId: 0,
  tablesAt: 0,
  tablesMs: 0,
  tablesBusy: false,
  tablesTimer: null,
  tablesVersion: 0,
  topologyKey: null,
  topologyCollapsed: false,
  eventsDrawn: null,
  answeredBy: null,
  freshness: null,
  refreshing: false,
  again: false,
  needTables: true,
  down: false,
};

// What tests and operators can read from the page: when each failure was first shown
// (Date.now() ms), refresh counts, the last tick.
window.ringwatch = { shown: {}, refreshes: 0, ticks: 0, lastTick: null };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === 'text') node.textContent = v;
    else node.setAttribute(k, String(v));
  }
  for (const c of children) if (c) node.append(c);
  return node;
}

function replace(id, ...children) {
  const node = document.getElementById(id);
  node.replaceChildren(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function age(us) {
  if (!us) return '';
  let s = Math.max(0, Math.round(Date.now() / 1000 - us / 1e6));
  if (s < 90) return `${s} s`;
  const m = Math.round(s / 60);
  if (m < 90) return `${m} min`;
  const h = Math.round(m / 60);
  if (h < 48) return `${h} h`;
  return `${Math.round(h / 24)} d`;
}

// One formatter for every time of day: toLocaleTimeString builds a new one per call,
// about 0.3 ms each, and the timeline shows 50 of them.
const CLOCK = new Intl.DateTimeFormat([], { hour: 'numeric', minute: 'numeric', second: 'numeric', hourCycle: 'h23' });

function clock(us) {
  return CLOCK.format(new Date(us / 1000));
}

function ageSpan(us) {
  return el('span', { class: 'age', 'data-us': us, title: new Date(us / 1000).toISOString() }, age(us));
}

function headers() {
  return S.token ? { Authorization: `Bearer ${S.token}` } : {};
}

class AuthNeeded extends Error {}

async function api(path) {
  const response = await fetch(path, { headers: headers(), cache: 'no-store' });
  if (response.status === 401) throw new AuthNeeded(path);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

// ---- live stream --------------------------------------------------------------------

function setConn(state, text) {
  const badge = document.getElementById('conn');
  badge.dataset.state = state;
  badge.textContent = text || state;
}

async function live() {
  for (;;) {
    try {
      const response = await fetch('/console/live', { headers: headers(), cache: 'no-store' });
      if (response.status === 401) throw new AuthNeeded('/console/live');
      if (!response.ok) throw new Error(`live: HTTP ${response.status}`);
      setConn('live');
      S.down = false;
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          onFrame(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
      // The node ended the stream (its lifetime): reconnect at once.
      continue;
    } catch (e) {
      if (e instanceof AuthNeeded) {
        askToken();
        setConn('reconnecting', 'token needed');
      } else {
        S.down = true;
        setConn('down', 'node not answering');
        showDown();
      }
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

function onFrame(frame) {
  let event = 'message';
  let data = '';
  for (const line of frame.split('\n')) {
    if (line.startsWith('event:')) event = line.slice(6).trim();
    else if (line.startsWith('data:')) data += line.slice(5).trim();
  }
  if (event !== 'tick' || !data) return;
  let tick;
  try { tick = JSON.parse(data); } catch (_) { return; }
  const before = S.tick;
  S.tick = tick;
  window.ringwatch.ticks += 1;
  window.ringwatch.lastTick = tick;
  if (!before || before.leader_id !== tick.leader_id || before.term !== tick.term) S.needTables = true;
  refresh();
}

// ---- reading the API ----------------------------------------------------------------

async function refresh() {
  if (S.refreshing) { S.again = true; return; }
  S.refreshing = true;
  try {
    do {
      S.again = false;
      await readAll();
    } while (S.again);
  } finally {
    S.refreshing = false;
  }
}

async function readAll() {
  const limit = S.lastEventId === 0 ? EVENTS_FIRST_BATCH : EVENTS_BATCH;
  try {
    const [cluster, status, failures, events] = await Promise.all([
      api('/cluster/status'),
      api('/v1/status'),
      api('/v1/failures'),
      api(`/v1/events?since=${S.lastEventId}&limit=${limit}`),
    ]);
    S.cluster = cluster;
    S.status = status.data;
    S.answeredBy = status;
    S.freshness = status.freshness || null;
    S.failures = failures.data;
    let behind = false;
    if (events.data.length) {
      S.events = S.events.concat(events.data).slice(-EVENTS_KEPT);
      S.lastEventId = events.data[events.data.length - 1].id;
      S.needTables = true;
      behind = events.data.length >= limit;
    }
    hideToken();
    window.ringwatch.refreshes += 1;
    if (behind) { S.again = true; return; }
    render();
    // Hosts, rings and the topology change with events (joins, verdicts, leaves); read
    // them then, after a leader change, and every 30 s, apart from this read: the
    // failures, tiles and timeline above are drawn without waiting for them.
    if (S.needTables || Date.now() - S.tablesAt > TABLES_EVERY_MS) readTables();
  } catch (e) {
    if (e instanceof AuthNeeded) askToken();
    else banner(`Could not read this node's state: ${e.message}`, true);
  }
}

async function readTables() {
  if (S.tablesBusy) return; // the read under way is followed by another if needed
  const wait = S.tablesAt + Math.min(TABLES_GAP_MAX_MS, TABLES_GAP_FACTOR * S.tablesMs) - Date.now();
  if (wait > 0) {
    if (!S.tablesTimer) S.tablesTimer = setTimeout(() => { S.tablesTimer = null; readTables(); }, wait);
    return;
  }
  S.tablesBusy = true;
  S.needTables = false;
  const started = performance.now();
  try {
    const [hosts, rings, topology] = await Promise.all([
      api('/v1/hosts'), api('/v1/rings'), api('/v1/topology'),
    ]);
    S.hosts = hosts.data;
    S.hostsById = new Map(S.hosts.map((h) => [h.id, h]));
    S.rings = rings.data;
    S.topology = topology.data;
    S.tablesAt = Date.now();
    S.tablesVersion += 1;
    render();
    S.tablesMs = performance.now() - started;
  } catch (e) {
    S.needTables = true;
    S.tablesBusy = false;
    if (e instanceof AuthNeeded) askToken();
    else banner(`Could not read this node's state: ${e.message}`, true);
    return;
  }
  S.tablesBusy = false;
  // Events moved during the read: read again (after the gap).
  if (S.needTables) readTables();
}

function askToken() {
  document.getElementById('token-box').hidden = false;
}

function hideToken() {
  document.getElementById('token-box').hidden = true;
}

function banner(text, bad) {
  const b = document.getElementById('banner');
  if (!text) { b.hidden = true; return; }
  b.hidden = false;
  b.className = bad ? 'bad' : '';
  b.replaceChildren(...(Array.isArray(text) ? text : [text]));
}

function showDown() {
  const others = S.cluster ? Object.entries(S.cluster.nodes || {})
    .filter(([id]) => Number(id) !== S.cluster.node_id) : [];
  const links = [];
  for (const [id, addr] of others) {
    links.push(' ', el('a', { href: `http://${addr.admin}/console/` }, `node ${id} (${addr.admin})`));
  }
  banner([
    'This CMA node does not answer; the page retries every second and shows its last state. ',
    others.length ? 'Open the console on another node:' : '',
    ...links,
  ], true);
}

// ---- what each host looks like ------------------------------------------------------

// Failures that explain other elements: hosts behind a dead switch or router are
// unreachable, not dead.
function derived() {
  const open = S.failures.filter((f) => f.state === 'open');
  const unreachable = new Set();
  const subjects = new Set();
  const downBoxes = new Set();
  for (const f of open) {
    subjects.add(String(f.subject));
    if (f.kind === 'switch_down' || f.kind === 'router_down') {
      downBoxes.add(String(f.subject));
      for (const h of f.hosts) unreachable.add(h);
    }
    if (f.kind === 'link_fault') for (const h of String(f.subject).split('-')) subjects.add(h);
  }
  return { open, unreachable, subjects, downBoxes };
}

function hostState(host, d) {
  if (host.status === 'left') return 'left';
  if (d.unreachable.has(host.id)) return 'unreachable';
  return host.status; // up, suspect, dead
}

const STATE_WORD = { up: 'up', suspect: 'suspect', dead: 'dead', unreachable: 'unreachable', left: 'left', agent_down: 'agent down' };

// ---- rendering ----------------------------------------------------------------------

function render() {
  const d = derived();
  renderHeader();
  renderSummary(d);
  renderFailures(d);
  renderTopology(d);
  renderCluster();
  renderEvents();
  renderClosed();
  renderHostPage(d);
  renderSearch();
  const now = Date.now();
  for (const f of S.failures) {
    if (!(f.id in window.ringwatch.shown)) window.ringwatch.shown[f.id] = now;
  }
}

function renderHeader() {
  const c = S.cluster;
  const t = S.tick;
  if (!c) return;
  const role = t ? t.role : (c.state || '').toLowerCase();
  const leader = c.leader_id != null ? `leader ${c.leader_id}` : 'no leader';
  document.getElementById('node').textContent =
    `node ${c.node_id} (${role}) · ${leader} · term ${c.term} · applied ${c.applied_index}`;
  const f = S.freshness;
  if (S.down) return;
  if (!f || f.kind === 'current') banner(null);
  else if (f.kind === 'follower') {
    const lag = Math.max(0, f.leader_commit - f.applied_index);
    if (lag > 100 || f.heard_ms_ago > 2000) {
      banner(`Follower ${c.node_id} is ${lag} entries behind leader ${f.leader_id} (heard ${(f.heard_ms_ago / 1000).toFixed(1)} s ago): what you see may be old.`);
    } else banner(null);
  } else if (f.kind === 'unconfirmed') {
    banner(`Leader ${c.node_id} could not confirm its state in time: what you see may lag (applied index ${f.applied_index}).`);
  } else if (f.kind === 'no_quorum') {
    const heard = f.heard_ms_ago == null ? 'no leader heard since it started'
      : `leader last heard ${(f.heard_ms_ago / 1000).toFixed(1)} s ago`;
    banner(`NO QUORUM: node ${c.node_id} reaches no quorum; this is its state as of applied index ${f.applied_index} (${heard}) and may be old.`, true);
  }
}

function tile(label, value, bad, id) {
  return el('div', { class: bad ? 'tile bad' : 'tile', id },
    el('b', {}, value), label);
}

function renderSummary(d) {
  const s = S.status || {};
  let up = 0;
  let dead = 0;
  let unreachable = 0;
  let left = 0;
  let agents = 0;
  for (const h of S.hosts) {
    const state = hostState(h, d);
    if (state === 'unreachable') unreachable += 1;
    else if (state === 'dead') dead += 1;
    if (h.status === 'up' && !d.unreachable.has(h.id)) up += 1;
    if (h.status === 'left') left += 1;
    if (h.status === 'agent_down') agents += 1;
  }
  replace('summary',
    tile('open failures', d.open.length, d.open.length > 0, 'tile-open'),
    tile('hosts up', up, false, 'tile-up'),
    tile('hosts dead', dead, dead > 0, 'tile-dead'),
    tile('unreachable', unreachable, unreachable > 0, 'tile-unreachable'),
    tile('agents down', agents, agents > 0, 'tile-agents'),
    tile('hosts left', left, false, 'tile-left'),
    tile('worker backlog', s.backlog ?? '–', (s.backlog || 0) > 1000, 'tile-backlog'),
  );
}

function evidenceBrief(items) {
  const byKind = {};
  const probes = [];
  for (const item of items || []) {
    if (item.Report) {
      const kind = item.Report.kind === 'Refused' ? 'port-unreachable' : String(item.Report.kind).toLowerCase();
      const list = byKind[kind] || (byKind[kind] = []);
      if (!list.includes(item.Report.reporter)) list.push(item.Report.reporter);
    } else if (item.Probe) {
      const t = item.Probe.target || {};
      const target = t.Host != null ? `host ${t.Host}` : t.Switch != null ? `switch ${t.Switch}`
        : t.Router != null ? `router ${t.Router}` : '?';
      const r = item.Probe.reachable;
      const outcome = r === true ? 'reachable' : r === false ? 'unreachable' : 'no answer';
      probes.push(`probe ${item.Probe.from} → ${target}: ${outcome}`);
    }
  }
  const parts = Object.keys(byKind).sort().map((k) =>
    `reported ${k} by ${byKind[k].sort((a, b) => a - b).join(', ')}`);
  return parts.concat(probes).join('; ');
}

function subjectCell(f) {
  const subject = String(f.subject);
  if (/^\d+$/.test(subject)) {
    const host = S.hostsById.get(Number(subject));
    const label = host ? `host ${subject} (${host.hostname})` : `host ${subject}`;
    return el('td', {}, el('a', { href: `#host/${subject}` }, label));
  }
  const kind = f.kind === 'switch_down' ? 'switch ' : f.kind === 'router_down' ? 'router ' : '';
  return el('td', {}, kind + subject);
}

function failureRow(f, withClosed) {
  const hosts = f.hosts.length ? f.hosts.join(', ') : '';
  const cells = [
    el('td', {}, el('span', { class: `kind kind-${f.kind}` }, f.kind.replace(/_/g, ' '))),
    subjectCell(f),
    el('td', {}, f.summary, el('br'), el('span', { class: 'muted' }, evidenceBrief(f.evidence))),
    el('td', {}, hosts),
    el('td', {}, ageSpan(f.at_us), ' ago'),
  ];
  if (withClosed) cells.push(el('td', {}, ...(f.closed_us ? [ageSpan(f.closed_us), ' ago'] : ['still open'])));
  return el('tr', { class: f.state === 'open' ? 'open' : 'closed', 'data-failure-id': f.id, 'data-kind': f.kind, 'data-subject': f.subject }, ...cells);
}

function renderFailures(d) {
  const head = el('tr', {}, el('th', {}, 'verdict'), el('th', {}, 'subject'),
    el('th', {}, 'root cause and evidence'), el('th', {}, 'hosts affected'), el('th', {}, 'since'));
  const rows = d.open.slice().sort((a, b) => b.at_us - a.at_us).map((f) => failureRow(f, false));
  if (!rows.length) rows.push(el('tr', {}, el('td', { class: 'empty', colspan: 5 }, 'None: every known host, link, switch and router is fine.')));
  replace('open-failures', el('thead', {}, head), el('tbody', {}, ...rows));
}

function renderClosed() {
  const closed = S.failures.filter((f) => f.state === 'closed')
    .sort((a, b) => (b.closed_us || b.at_us) - (a.closed_us || a.at_us)).slice(0, CLOSED_SHOWN);
  const head = el('tr', {}, el('th', {}, 'verdict'), el('th', {}, 'subject'),
    el('th', {}, 'root cause and evidence'), el('th', {}, 'hosts'), el('th', {}, 'reached'), el('th', {}, 'closed'));
  const rows = closed.map((f) => failureRow(f, true));
  if (!rows.length) rows.push(el('tr', {}, el('td', { class: 'empty', colspan: 6 }, 'None yet.')));
  replace('closed-failures', el('thead', {}, head), el('tbody', {}, ...rows));
}

function renderCluster() {
  const c = S.cluster;
  if (!c) return;
  const head = el('tr', {}, el('th', {}, 'node'), el('th', {}, 'role'), el('th', {}, 'admin'),
    el('th', {}, 'replicated to'), el('th', {}, 'lag'));
  const ids = Object.keys(c.nodes || {}).map(Number).sort((a, b) => a - b);
  const repl = c.replication || {};
  const rows = ids.map((id) => {
    const voter = (c.voters || []).includes(id);
    let role = voter ? 'voter' : 'learner';
    if (id === c.leader_id) role = 'leader';
    const here = id === c.node_id ? ' (this page)' : '';
    let matched = '';
    let lag = '';
    if (c.leader_id === c.node_id) {
      const m = repl[id];
      if (m === undefined || m === null) { matched = id === c.node_id ? String(c.last_log_index) : 'not reached'; lag = id === c.node_id ? '0' : '?'; } else { matched = String(m); lag = String(Math.max(0, c.last_log_index - m)); }
    } else if (id === c.node_id) {
      matched = String(c.applied_index);
    }
    return el('tr', { 'data-node': id }, el('td', {}, `${id}${here}`), el('td', { class: 'state-word' }, role),
      el('td', {}, c.nodes[id].admin), el('td', {}, matched), el('td', {}, lag));
  });
  replace('members', el('thead', {}, head), el('tbody', {}, ...rows));
  const q = c.queue || {};
  const s = S.status || {};
  const pct = q.max_bytes ? ` of ${mib(q.max_bytes)} (${Math.round((100 * q.bytes) / q.max_bytes)} %)` : '';
  const facts = [
    ['this node', `${c.node_id}: ${c.state}, term ${c.term}`],
    ['leader', c.leader_id != null ? String(c.leader_id) : 'none (election, or no quorum)'],
    ['log', `last ${c.last_log_index}, applied ${c.applied_index}, snapshot ${c.snapshot_index}`],
    ['queue depth', `${q.depth ?? '–'} packets, ${mib(q.bytes || 0)}${pct}`],
    ['worker', `offset ${s.offset ?? '–'} of ${s.queue_next ?? '–'}: backlog ${s.backlog ?? '–'}`],
  ];
  replace('queue', ...facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
}

function mib(bytes) {
  return bytes >= 1048576 ? `${(bytes / 1048576).toFixed(1)} MiB` : `${Math.round(bytes / 1024)} KiB`;
}

function eventItem(e) {
  return el('li', { 'data-event-id': e.id, 'data-kind': e.kind },
    el('time', { datetime: new Date(e.at_us / 1000).toISOString() }, clock(e.at_us)),
    el('span', { class: 'kind' }, e.kind), ' ', e.summary);
}

function renderEvents() {
  // Drawn again only when events arrived.
  if (S.eventsDrawn === S.lastEventId && document.getElementById('events').firstChild) return;
  S.eventsDrawn = S.lastEventId;
  const items = S.events.slice(-50).reverse().map(eventItem);
  if (!items.length) items.push(el('li', { class: 'muted' }, 'No events yet.'));
  replace('events', ...items);
}

// ---- topology -----------------------------------------------------------------------

function groups() {
  const topo = S.topology || { switches: [], routers: [], unplaced: [] };
  const byId = S.hostsById;
  const ringOrder = new Map(S.rings.map((r) => [r.name, r.members]));
  const placed = new Set();
  const out = [];
  for (const sw of topo.switches) {
    let ids = sw.hosts.map((p) => p.host);
    const ring = ringOrder.get(`switch:${sw.name}`);
    if (ring) {
      const mine = new Set(ids);
      const inRing = new Set(ring);
      ids = ring.filter((id) => mine.has(id)).concat(ids.filter((id) => !inRing.has(id)));
    }
    ids.forEach((id) => placed.add(id));
    out.push({ key: sw.name, label: `switch ${sw.name}`, kind: 'switch', router: sw.router, hosts: ids.map((id) => byId.get(id) || { id, hostname: '?', status: 'up' }) });
  }
  let flat = (topo.unplaced || []).slice();
  const flatRing = ringOrder.get('flat');
  if (flatRing) {
    const unplaced = new Set(flat);
    const inRing = new Set(flatRing);
    flat = flatRing.filter((id) => unplaced.has(id) || !placed.has(id)).concat(flat.filter((id) => !inRing.has(id)));
  }
  const inFlat = new Set(flat);
  const rest = S.hosts.filter((h) => !placed.has(h.id) && !inFlat.has(h.id) && h.status !== 'left').map((h) => h.id);
  flat = flat.concat(rest);
  flat.forEach((id) => placed.add(id));
  if (flat.length) out.push({ key: 'flat', label: 'no known switch (flat ring)', kind: 'flat', hosts: flat.map((id) => byId.get(id) || { id, hostname: '?', status: 'up' }) });
  const left = S.hosts.filter((h) => !placed.has(h.id) && h.status === 'left');
  if (left.length) out.push({ key: 'left', label: 'left the cluster', kind: 'left', hosts: left });
  return { topo, out };
}

function renderTopology(d) {
  // Drawn again only when what it shows changed (new tables, or the open failures'
  // subjects, down boxes and unreachable hosts): not on every tick, which also keeps
  // keyboard focus on a host. Collapsed, hosts are not drawn, so a verdict about a host
  // shows in the counts with the next tables, not by itself.
  let subjects = [...d.subjects];
  if (S.topologyCollapsed) subjects = subjects.filter((s) => !/^\d+$/.test(s));
  const key = [S.tablesVersion, subjects.join(), [...d.downBoxes].join(), [...d.unreachable].join()].join('|');
  if (key === S.topologyKey && document.getElementById('topology-box').firstChild) return;
  S.topologyKey = key;
  const { topo, out } = groups();
  const total = out.reduce((n, g) => n + g.hosts.length, 0);
  const detailed = total <= DETAIL_MAX_HOSTS && out.every((g) => g.hosts.length <= DETAIL_MAX_GROUP);
  S.topologyCollapsed = !detailed;
  document.getElementById('topology-mode').textContent = detailed
    ? `(${total} hosts; rings drawn in heartbeat order)`
    : `(${total} hosts: switches with counts; search a host to see it)`;
  replace('legend',
    el('span', { class: 'l-up' }, 'up'), el('span', { class: 'l-dead' }, 'dead'),
    el('span', { class: 'l-unreachable' }, 'unreachable (behind a failed switch or router), not dead'),
    el('span', { class: 'l-agent' }, 'agent down (host up, its nanoprobe not running)'),
    el('span', { class: 'l-left' }, 'left'), el('span', { class: 'l-subject' }, 'subject of an open failure'));

  const pos = new Map(); // host id -> [x, y]
  const layers = { rings: svg('g'), links: svg('g'), boxes: svg('g'), hosts: svg('g'), top: svg('g') };
  const routerY = 34;
  const switchY = topo.routers.length ? 110 : 34;
  const gap = 30;
  let x = 20;
  let rowTop = switchY;
  let rowHeight = 0;
  const maxWidth = 1400;
  const switchAt = new Map();
  if (!detailed) {
    renderCollapsed(topo, out, d, layers, maxWidth);
    return;
  }
  for (const g of out) {
    const n = g.hosts.length;
    const r = Math.max(40, (n * 30) / (2 * Math.PI));
    const w = Math.max(150, 2 * r + 50);
    const h = 2 * r + 115;
    g.r = r;
    if (x + w > maxWidth && x > 20) { x = 20; rowTop += rowHeight + gap; rowHeight = 0; }
    g.x = x; g.y = rowTop; g.w = w; g.h = h;
    x += w + gap;
    rowHeight = Math.max(rowHeight, h);
    switchAt.set(g.key, g);
  }
  const width = Math.max(640, ...out.map((g) => g.x + g.w + 20));
  const height = Math.max(140, ...out.map((g) => g.y + g.h + 20));

  // Routers above their switches.
  for (const r of topo.routers) {
    const mine = r.switches.map((s) => switchAt.get(s)).filter(Boolean);
    const cx = mine.length ? mine.reduce((a, g) => a + g.x + g.w / 2, 0) / mine.length : 100;
    const down = d.downBoxes.has(r.name);
    for (const g of mine) {
      layers.links.append(svg('line', { class: down ? 'uplink down' : 'uplink', x1: cx, y1: routerY + 16, x2: g.x + g.w / 2, y2: g.y }));
    }
    layers.boxes.append(box(cx, routerY, `router ${r.name}`, down, d.subjects.has(r.name), 'router', r.name));
  }

  for (const g of out) {
    const cx = g.x + g.w / 2;
    if (g.kind === 'switch') {
      const down = d.downBoxes.has(g.key);
      layers.boxes.append(box(cx, g.y + 16, g.label, down, d.subjects.has(g.key), 'switch', g.key));
    } else {
      layers.boxes.append(svg('text', { class: 'group-label', x: cx, y: g.y + 20, text: g.label }));
    }
    const cy = g.y + 70 + g.r;
    const pts = [];
    g.hosts.forEach((host, i) => {
      const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(1, g.hosts.length);
      const hx = cx + g.r * Math.cos(a);
      const hy = cy + g.r * Math.sin(a);
      pos.set(host.id, [hx, hy]);
      pts.push(`${hx.toFixed(1)},${hy.toFixed(1)}`);
      layers.hosts.append(hostDot(host, hx, hy, d));
    });
    if (g.kind !== 'left' && pts.length > 1) layers.rings.append(svg('polygon', { class: 'ring', points: pts.join(' ') }));
  }
  // The top ring: one representative per switch ring, dashed.
  const top = S.rings.find((r) => r.kind === 'top');
  if (top && top.members.length > 1) {
    const pts = top.members.map((id) => pos.get(id)).filter(Boolean).map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`);
    if (pts.length > 1) layers.top.append(svg('polygon', { class: 'top-ring', points: pts.join(' ') }));
  }
  drawTopology(width, height, layers);
}

function drawTopology(width, height, layers) {
  const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, width, height, role: 'img', 'aria-label': 'Topology: routers, switches, hosts and heartbeat rings' },
    svg('title', { text: 'Ringwatch topology' }), layers.links, layers.rings, layers.top, layers.boxes, layers.hosts);
  replace('topology-box', root);
}

const natural = (a, b) => String(a).localeCompare(String(b), undefined, { numeric: true });

// Above DETAIL_MAX_HOSTS: one band per router (its box on the left, its switches in
// natural name order to its right, each a box with its hosts' counts), then switches of no
// known router, the flat ring and departed hosts. No uplink lines: the band says which
// router a switch hangs off (at 250 switches under 16 routers, lines are a tangle).
function renderCollapsed(topo, out, d, layers, maxWidth) {
  const left = 140;
  const cellW = 127;
  const rowGap = 8;
  const bandGap = 14;
  const routers = topo.routers.slice().sort((a, b) => natural(a.name, b.name));
  const byRouter = new Map(routers.map((r) => [r.name, []]));
  const others = [];
  for (const g of out) {
    const counts = {};
    for (const host of g.hosts) { const s = hostState(host, d); counts[s] = (counts[s] || 0) + 1; }
    g.lines = ['up', 'dead', 'unreachable', 'agent_down', 'suspect', 'left'].filter((s) => counts[s]).map((s) => `${counts[s]} ${STATE_WORD[s]}`);
    if (!g.lines.length) g.lines.push('no hosts');
    const mine = g.kind === 'switch' && g.router != null ? byRouter.get(g.router) : undefined;
    (mine || others).push(g);
  }
  const kindOrder = { switch: 0, flat: 1, left: 2 };
  const bands = routers.map((r) => ({ router: r, groups: byRouter.get(r.name).sort((a, b) => natural(a.key, b.key)) }));
  others.sort((a, b) => (kindOrder[a.kind] - kindOrder[b.kind]) || natural(a.key, b.key));
  if (others.length) bands.push({ router: null, groups: others });
  let y = 10;
  for (const band of bands) {
    const top = y;
    let x = left;
    let rowHeight = 0;
    for (const g of band.groups) {
      const w = g.kind === 'switch' ? cellW - 10 : 2 * cellW - 10;
      if (x + w > maxWidth && x > left) { x = left; y += rowHeight + rowGap; rowHeight = 0; }
      g.x = x; g.y = y; g.w = w; g.h = 52 + 16 * g.lines.length;
      x += w + 10;
      rowHeight = Math.max(rowHeight, g.h);
    }
    y += Math.max(rowHeight, 50);
    if (band.router) {
      const r = band.router;
      layers.boxes.append(box(left / 2, top + 16, `router ${r.name}`, d.downBoxes.has(r.name), d.subjects.has(r.name), 'router', r.name));
    }
    layers.links.append(svg('line', { class: 'band', x1: 10, y1: y + bandGap / 2, x2: maxWidth - 10, y2: y + bandGap / 2 }));
    y += bandGap;
  }
  for (const g of out) {
    const cx = g.x + g.w / 2;
    if (g.kind === 'switch') {
      layers.boxes.append(box(cx, g.y + 16, g.label, d.downBoxes.has(g.key), d.subjects.has(g.key), 'switch', g.key));
    } else {
      layers.boxes.append(svg('text', { class: 'group-label', x: cx, y: g.y + 20, text: g.label }));
    }
    const t = svg('g', { class: 'counts' });
    g.lines.forEach((line, i) => t.append(svg('text', { x: cx, y: g.y + 58 + i * 16, text: line })));
    layers.hosts.append(t);
  }
  drawTopology(maxWidth, Math.max(140, y), layers);
}

function box(cx, cy, label, down, subject, kind, name) {
  const w = Math.max(110, label.length * 7.5 + 20);
  const g = svg('g', { class: `box ${kind}${down ? ' down' : ''}${subject ? ' subject' : ''}`, 'data-name': name, 'data-state': down ? 'down' : 'up' },
    svg('rect', { x: cx - w / 2, y: cy - 16, width: w, height: down ? 44 : 32 }),
    svg('text', { x: cx, y: cy + 4, text: label }));
  if (down) g.append(svg('text', { class: 'word', x: cx, y: cy + 22, text: '✕ DOWN' }));
  return g;
}

function hostDot(host, x, y, d) {
  const state = hostState(host, d);
  const subject = d.subjects.has(String(host.id));
  const g = svg('g', { class: `host ${state}${subject ? ' subject' : ''}`, 'data-host': host.id, 'data-state': state, tabindex: 0 },
    svg('title', { text: `host ${host.id} ${host.hostname} (${host.addr}): ${STATE_WORD[state] || state}` }),
    svg('circle', { cx: x.toFixed(1), cy: y.toFixed(1), r: 12 }),
    svg('text', { class: 'id', x: x.toFixed(1), y: (y + 4).toFixed(1), text: String(host.id) }));
  const word = { dead: '✕ dead', unreachable: '? unreach.', agent_down: '⚠ agent down' }[state] || state;
  if (state !== 'up') g.append(svg('text', { class: 'word', x: x.toFixed(1), y: (y + 25).toFixed(1), text: word }));
  const open = () => { location.hash = `#host/${host.id}`; };
  g.addEventListener('click', open);
  g.addEventListener('keydown', (e) => { if (e.key === 'Enter') open(); });
  return g;
}

// ---- host page and search -----------------------------------------------------------

function renderHostPage(d) {
  const m = /^#host\/(\d+)$/.exec(location.hash);
  document.getElementById('main').hidden = !!m;
  document.getElementById('host-page').hidden = !m;
  if (!m) return;
  const id = Number(m[1]);
  const host = S.hostsById.get(id);
  if (!host) {
    replace('host-title', `Host ${id}: not known to this node`);
    replace('host-facts');
    return;
  }
  const state = hostState(host, d);
  replace('host-title', `Host ${id} · ${host.hostname} · `, el('span', { class: 'state-word', 'data-state': state }, STATE_WORD[state] || state));
  const facts = [
    ['address', host.addr], ['switch', host.switch || 'unknown (flat ring)'],
    ['state', `${STATE_WORD[state]} for ${age(host.since_us)}`],
    ['watched by', host.watchers.length ? host.watchers.map((w) => `host ${w}`).join(', ') : 'nobody'],
    ['nanoprobe', host.version],
  ];
  replace('host-facts', ...facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
  const rings = S.rings.filter((r) => r.members.includes(id)).map((r) => {
    const i = r.members.indexOf(id);
    const n = r.members.length;
    const prev = r.members[(i - 1 + n) % n];
    const next = r.members[(i + 1) % n];
    return el('tr', {}, el('td', {}, r.name), el('td', {}, r.kind), el('td', {}, `${i + 1} of ${n}`),
      el('td', {}, n > 1 ? `host ${prev} and host ${next}` : 'alone'));
  });
  if (!rings.length) rings.push(el('tr', {}, el('td', { class: 'empty', colspan: 4 }, 'In no ring.')));
  replace('host-rings', el('thead', {}, el('tr', {}, el('th', {}, 'ring'), el('th', {}, 'kind'), el('th', {}, 'position'), el('th', {}, 'neighbours'))), el('tbody', {}, ...rings));
  const mine = S.failures.filter((f) => String(f.subject) === String(id) || f.hosts.includes(id) ||
    String(f.subject).split('-').includes(String(id))).sort((a, b) => b.at_us - a.at_us).map((f) => failureRow(f, true));
  if (!mine.length) mine.push(el('tr', {}, el('td', { class: 'empty', colspan: 6 }, 'No verdict about this host.')));
  replace('host-failures', el('tbody', {}, ...mine));
  const events = S.events.filter((e) => {
    const dd = e.data || {};
    return dd.host === id || (Array.isArray(dd.hosts) && dd.hosts.includes(id)) || String(dd.subject) === String(id);
  }).slice(-50).reverse().map(eventItem);
  if (!events.length) events.push(el('li', { class: 'muted' }, 'No events about this host in the recent timeline.'));
  replace('host-events', ...events);
}

function renderSearch() {
  const q = document.getElementById('search').value.trim().toLowerCase();
  const box = document.getElementById('search-results');
  if (!q) { box.hidden = true; return; }
  const d = derived();
  const found = S.hosts.filter((h) => String(h.id) === q || h.hostname.toLowerCase().includes(q) || String(h.addr).includes(q));
  const items = found.slice(0, 20).map((h) => el('li', {}, el('a', { href: `#host/${h.id}` }, `host ${h.id} ${h.hostname} (${h.addr})`), ` ${STATE_WORD[hostState(h, d)]}`));
  box.hidden = false;
  const more = found.length > 20 ? [el('p', { class: 'muted' }, `${found.length - 20} more; narrow the search.`)] : [];
  box.replaceChildren(found.length ? el('ul', {}, ...items) : el('span', { class: 'muted' }, `No host matches “${q}”.`), ...more);
}

// ---- start --------------------------------------------------------------------------

function start() {
  document.getElementById('search').addEventListener('input', renderSearch);
  // A result followed: the list closes, as after Enter.
  document.getElementById('search-results').addEventListener('click', (e) => {
    if (e.target.closest('a')) { document.getElementById('search').value = ''; renderSearch(); }
  });
  document.getElementById('search-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const q = document.getElementById('search').value.trim().toLowerCase();
    const h = S.hosts.find((x) => String(x.id) === q || x.hostname.toLowerCase() === q) ||
      S.hosts.find((x) => x.hostname.toLowerCase().includes(q) || String(x.addr).includes(q));
    if (h) { location.hash = `#host/${h.id}`; document.getElementById('search').value = ''; renderSearch(); }
  });
  document.getElementById('token-box').addEventListener('submit', (e) => {
    e.preventDefault();
    S.token = document.getElementById('token').value.trim() || null;
    if (S.token) sessionStorage.setItem(TOKEN_KEY, S.token); else sessionStorage.removeItem(TOKEN_KEY);
    S.needTables = true;
    refresh();
  });
  window.addEventListener('hashchange', () => render());
  // Ages move on without new data.
  setInterval(() => {
    for (const span of document.querySelectorAll('span.age')) span.textContent = age(Number(span.dataset.us));
  }, 1000);
  // A read every 5 s even without ticks: the freshness banner must not freeze on a
  // node that lost its leader.
  setInterval(() => { if (!S.down) refresh(); }, 5000);
  live();
}

start();
