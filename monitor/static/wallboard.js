/* callpulse floor wallboard.
 *
 * One websocket (/ws) feeds snapshots, alerts, acks and snoozes; this script keeps
 * a small client-side model and patches the DOM in place, keyed by agent_id, team
 * and alert id, so 200+ tiles updating every second cost little.
 * No dependencies, no build step: the floor screens are often offline.
 */
(function () {
  "use strict";

  // ---- tunables ------------------------------------------------------------
  const STALE_AFTER_MS = 5000;        // no snapshot for longer than this = stale
  const BACKOFF_INITIAL_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const HISTORY_MAX = 15;             // resolved alerts kept in the feed
  const LOCAL_GRACE_MS = 5000;        // a snapshot built before our ack/snooze must not undo it
  const GONE_GRACE_MS = 3000;         // an alert missing from a snapshot is resolved after this
  const ESCALATED_FLASH_MS = 6000;
  const TOAST_MS = 6000;
  const GRID_GAP_PX = 10;
  const ROTATE_DEFAULT_S = 15;        // seconds per page when the floor needs more than one screen

  // Tile presets, largest first; the grid uses the largest that fits every agent,
  // then scales it up to fill the space. Fonts follow through the --s variable.
  // cells: how many KPI cells a tile shows at that size (the rest go to the flag line).
  const DENSITIES = [
    { name: "l", w: 172, h: 172, cells: 6 },
    { name: "m", w: 160, h: 100, cells: 2 },
    { name: "s", w: 132, h: 62, cells: 0 },
  ];
  // Below "s" a tile can no longer say who is on a break and for how long: more agents than fit at "s"
  // go on pages that rotate (?rotate=SECONDS), never hidden.
  const PAGE_DENSITY = DENSITIES[DENSITIES.length - 1];
  const MAX_SCALE = 2.4;

  // What each KPI is called, how it is formatted and where it sits come from the server's
  // catalogue (the snapshot's "catalogue"), so a new KPI needs no change here.
  const FORMATS = {
    duration: (v) => fmtDuration(v), elapsed: (v) => fmtResponse(v), percent: (v) => fmtPercent(v),
    integer: (v) => fmtCount(v), money: (v) => fmtMoney(v), number: (v) => fmtGeneric(v),
  };
  let KPI_META = {};
  let TILE_KPIS = [];
  // Cells a tile also has, shown only when breached (in place of an empty default cell).
  let EXTRA_KPIS = [];
  let ALL_TILE_KPIS = [];
  let TEAM_CELLS = new Set();
  let HEADER_KPIS = [];
  let QUEUE_CELLS = [];
  let catalogueKey = "";
  function applyCatalogue(list) {
    if (!Array.isArray(list)) return;
    const key = list.map((k) => k.key + ":" + k.board + ":" + k.headline).join(",");
    if (key === catalogueKey) return;
    catalogueKey = key;
    KPI_META = {};
    for (const k of list) {
      KPI_META[k.key] = { label: k.short || k.key, title: k.title, fmt: FORMATS[k.format] || fmtGeneric, ratio: !!k.ratio };
    }
    // Agent KPIs go on tiles, team cards and the header; queue KPIs marked "strip" on the queue strip (live first).
    const agentKpis = list.filter((k) => (k.scope || "agent") === "agent");
    TILE_KPIS = agentKpis.filter((k) => k.board === "tile").map((k) => k.key);
    EXTRA_KPIS = agentKpis.filter((k) => k.board === "extra").map((k) => k.key);
    const strip = list.filter((k) => k.scope === "queue" && k.board === "strip");
    QUEUE_CELLS = strip.filter((k) => k.live).concat(strip.filter((k) => !k.live)).map((k) => k.key);
    ALL_TILE_KPIS = TILE_KPIS.concat(EXTRA_KPIS);
    TEAM_CELLS = new Set(TILE_KPIS);
    HEADER_KPIS = agentKpis.filter((k) => k.headline).map((k) => k.key);
    rebuildKpiViews();
  }
  // Short enough to sit beside the agent id on the smallest full tile.
  const STATE_LABELS = { available: "avail", on_call: "call", wrap: "wrap", break: "break", offline: "off" };
  const STATE_ORDER = ["available", "on_call", "wrap", "break", "offline"];
  const LEVEL_RANK = { ok: 0, warning: 1, critical: 2 };

  // ---- page parameters -----------------------------------------------------
  const params = new URLSearchParams(location.search);
  const teamFilter = params.get("team") || null;
  const byScore = params.get("sort") === "score";  // ?sort=score: a leaderboard, best scorecard first
  const token = params.get("token") || null;
  let currentWindow = params.get("window") || null;   // null: the server's default
  const rotateMs = Math.max(3, parseFloat(params.get("rotate")) || ROTATE_DEFAULT_S) * 1000;

  // ---- role ----------------------------------------------------------------
  // A read-only token (CALLPULSE_TOKEN while a supervisor token is set) may not acknowledge or
  // snooze: the board hides those controls until /api/role says this viewer may act.
  const NAME_KEY = "callpulse.name";
  const NAME_MAX = 64;
  let mayAct = false;
  let roleKnown = false;
  document.body.classList.add("read-only");
  function loadRole() {
    const u = new URL("api/role", location.href);   // relative: honours a path prefix
    if (token) u.searchParams.set("token", token);
    fetch(u.toString(), { cache: "no-store" })
      .then((r) => (r.ok ? r.json() : null))
      .then((info) => {
        if (!info) return;
        roleKnown = true;
        mayAct = !!info.may_act;
        document.body.classList.toggle("read-only", !mayAct);
        document.body.dataset.role = info.role || "";
        scheduleRender();
      })
      .catch(() => { /* stays read-only; asked again on the next connect */ });
  }
  // The audit log records who acted: ask once for a name and keep it in this browser.
  function actorName() {
    let name = null;
    try { name = localStorage.getItem(NAME_KEY); } catch (_) { /* storage off: ask each time */ }
    if (name === null) {
      name = (window.prompt("Your name, for the audit log of acknowledgements and snoozes:") || "")
        .trim().slice(0, NAME_MAX);
      try { localStorage.setItem(NAME_KEY, name); } catch (_) { /* not kept */ }
    }
    return name || null;
  }

  // ---- model ---------------------------------------------------------------
  const pageLoadedAt = Date.now();
  let snapshot = null;
  let thresholds = {};
  let skewMs = 0;                     // server clock minus ours, from snapshot as_of
  let lastFreshAt = 0;                // local ms of the last snapshot
  const agentTeam = new Map();        // agent_id -> team, from the full snapshot
  const snoozes = new Map();          // "agent|a0001|<kpi>" -> {until: ms, localAt: ms}
  const alerts = new Map();           // id -> {alert, receivedAt, localAckAt, escalatedAt}
  let queueThresholds = {};
  let redisDown = null;               // the monitor's message while Redis is unreachable
  let page = { index: 0, count: 1, size: Infinity, since: Date.now() };
  let orderedIds = [];
  let lastTeamsKey = "";

  // ---- connection state ----------------------------------------------------
  let ws = null;
  let wsGen = 0;                      // bumps on every new socket; stale handlers check it
  let wsOpen = false;
  let attempt = 0;
  let reconnectAt = 0;
  let reconnectTimer = null;
  let freshSinceConnect = false;

  // ---- DOM -----------------------------------------------------------------
  const $ = (id) => document.getElementById(id);
  const el = {
    grid: $("agent-grid"), gridEmpty: $("grid-empty"), teams: $("teams"),
    floorKpis: $("floor-kpis"), scopeLabel: $("scope-label"), asOf: $("as-of"),
    alertCount: $("alert-count"), alertUnacked: $("alert-unacked"), alertCountBox: $("alert-count-box"),
    windowSwitch: $("window-switch"), conn: $("conn-status"),
    stale: $("stale-banner"), staleSince: $("stale-since"), staleDetail: $("stale-detail"),
    alertList: $("alert-list"), alertHistory: $("alert-history"), alertEmpty: $("alert-empty"),
    snoozeMinutes: $("snooze-minutes"), toast: $("toast"), historyHead: $("history-head"), alertMore: $("alert-more"),
    queues: $("queue-strip"), pageInfo: $("page-indicator"),
  };
  const tiles = new Map();            // agent_id -> {root, refs, cache}
  const teamCards = new Map();        // team -> {root, refs, cache}
  const alertEls = new Map();         // id -> {root, refs, cache}
  let tileOrderKey = "";
  let density = DENSITIES[0];
  let teamOrderKey = "";
  let windowsKey = "";

  // ---- formatting ----------------------------------------------------------
  const DASH = "\u2013";
  function isNum(v) { return typeof v === "number" && Number.isFinite(v); }
  function pad2(n) { return n < 10 ? "0" + n : String(n); }

  function fmtDuration(s) {
    if (!isNum(s)) return DASH;
    const total = Math.max(0, Math.round(s));
    const h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), sec = total % 60;
    return h > 0 ? h + ":" + pad2(m) + ":" + pad2(sec) : m + ":" + pad2(sec);
  }
  function fmtPercent(r) {
    if (!isNum(r)) return DASH;
    return Math.round(r * 100) + "%";
  }
  function fmtResponse(s) {
    if (!isNum(s)) return DASH;
    s = Math.max(0, s);
    if (s < 570) return trim1(s / 60) + "m";         // under 9.5 min: one decimal
    if (s < 3570) return Math.round(s / 60) + "m";
    const h = s / 3600;
    return (h < 9.95 ? trim1(h) : String(Math.round(h))) + "h";
  }
  function trim1(x) { const t = x.toFixed(1); return t.endsWith(".0") ? t.slice(0, -2) : t; }
  function fmtCount(n) { return isNum(n) ? String(Math.round(n)) : DASH; }
  function fmtMoney(v) {
    if (!isNum(v)) return DASH;
    if (Math.abs(v) >= 100000) return trim1(v / 1000) + "k";
    return v.toLocaleString(undefined, { minimumFractionDigits: 0, maximumFractionDigits: v < 1000 ? 2 : 0 });
  }
  function fmtScore(v) { return isNum(v) ? String(Math.round(v)) : DASH; }
  function fmtGeneric(v) {
    if (!isNum(v)) return DASH;
    return Number.isInteger(v) ? String(v) : String(Math.round(v * 100) / 100);
  }
  function fmtKpi(key, v) { const m = KPI_META[key]; return m ? m.fmt(v) : fmtGeneric(v); }
  // A value beside its threshold with enough digits to tell them apart: "34.6% below 35%", never "35% below 35%".
  function fmtPair(key, v, t) {
    let a = fmtKpi(key, v), b = fmtKpi(key, t);
    const m = KPI_META[key];
    const fmt = m ? m.fmt : fmtGeneric;
    for (let d = 1; a === b && d <= 4; d++) {
      if (fmt === fmtPercent) { a = fmtPercentDigits(v, d); b = fmtPercentDigits(t, d); }
      else if (fmt === fmtDuration || fmt === fmtResponse) { a = trimN(v, d) + " s"; b = trimN(t, d) + " s"; }
      else { a = trimN(v, d); b = trimN(t, d); }
    }
    return [a, b];
  }
  function fmtPercentDigits(r, d) { return isNum(r) ? trimN(r * 100, d) + "%" : DASH; }
  function trimN(x, d) { return isNum(x) ? String(Number(x.toFixed(d))) : DASH; }
  function kpiLabel(key) { const m = KPI_META[key]; return m ? m.label : key; }
  function fmtClock(ms) {
    if (!isNum(ms)) return DASH;
    const d = new Date(ms);
    return pad2(d.getHours()) + ":" + pad2(d.getMinutes()) + ":" + pad2(d.getSeconds());
  }
  function fmtClockShort(ms) {
    const d = new Date(ms);
    return pad2(d.getHours()) + ":" + pad2(d.getMinutes());
  }
  function parseTs(ts) {
    if (isNum(ts)) return ts * 1000;                 // epoch seconds
    const t = Date.parse(ts);
    return Number.isNaN(t) ? NaN : t;
  }
  function serverNow() { return Date.now() + skewMs; }

  // ---- small DOM helpers ---------------------------------------------------
  function h(tag, cls, text) {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text != null) n.textContent = text;
    return n;
  }
  function setText(node, cache, key, text) {
    if (cache[key] !== text) { node.textContent = text; cache[key] = text; }
  }
  function setClass(node, cache, key, cls) {
    if (cache[key] !== cls) { node.className = cls; cache[key] = cls; }
  }
  function setAttr(node, cache, key, name, value) {
    if (cache[key] !== value) { node.setAttribute(name, value); cache[key] = value; }
  }

  // ---- levels and snoozes --------------------------------------------------
  function snoozeKey(scope, id, kpi) { return scope + "|" + id + "|" + kpi; }
  function snoozedUntil(scope, id, kpi) {
    if (id == null) return 0;
    const s = snoozes.get(snoozeKey(scope, id, kpi));
    return s && s.until > serverNow() ? s.until : 0;
  }
  function addSnooze(scope, id, kpi, untilMs, local) {
    if (id == null || !kpi || !isNum(untilMs)) return;
    snoozes.set(snoozeKey(scope, id, kpi), { until: untilMs, localAt: local ? Date.now() : 0, scope, id, kpi });
  }

  // Level of one KPI: the server's levels map, else inferred from the breach list and
  // thresholds. Null values and snoozed KPIs are never coloured.
  function kpiLevel(entity, key, scope, id) {
    const v = entity.kpis ? entity.kpis[key] : null;
    if (!isNum(v)) return "ok";
    if (scope && snoozedUntil(scope, id, key)) return "ok";
    const lv = entity.levels && entity.levels[key];
    if (lv === "warning" || lv === "critical") return lv;
    if (Array.isArray(entity.breaches) && entity.breaches.includes(key)) return inferLevel(key, v);
    return "ok";
  }
  function inferLevel(key, v) {
    const t = thresholds[key] || {};
    if (isNum(t.critical_above) && v > t.critical_above) return "critical";
    if (isNum(t.critical_below) && v < t.critical_below) return "critical";
    return "warning";
  }
  const breachedCache = new WeakMap();            // entity object -> Set, per snapshot
  function breachedKeys(entity) {
    let keys = breachedCache.get(entity);
    if (keys) return keys;
    keys = new Set();
    if (entity.levels) for (const k of Object.keys(entity.levels)) keys.add(k);
    if (Array.isArray(entity.breaches)) for (const k of entity.breaches) keys.add(k);
    breachedCache.set(entity, keys);
    return keys;
  }
  function worstLevel(entity, scope, id) {
    let worst = "ok";
    for (const k of breachedKeys(entity)) {
      const lv = kpiLevel(entity, k, scope, id);
      if (LEVEL_RANK[lv] > LEVEL_RANK[worst]) worst = lv;
    }
    return worst;
  }

  // ---- KPI cells (shared by tiles, team cards and the header) ---------------
  function makeKpiCell(key, cls) {
    const root = h("div", cls || "kpi");
    root.dataset.kpi = key;
    const label = h("span", "kpi-label", kpiLabel(key));
    const value = h("span", "kpi-value", DASH);
    root.append(label, value);
    return { root, value, cache: {} };
  }
  function updateKpiCell(cell, base, entity, key, scope, id) {
    const v = entity.kpis ? entity.kpis[key] : null;
    const isNull = !isNum(v);
    const snoozed = !isNull && scope && breachedKeys(entity).has(key) && snoozedUntil(scope, id, key);
    const lv = kpiLevel(entity, key, scope, id);
    let cls = base;
    if (isNull) cls += " is-null";
    if (lv !== "ok") cls += " lvl-" + lv;
    if (snoozed) cls += " snoozed";
    setClass(cell.root, cell.cache, "cls", cls);
    setText(cell.value, cell.cache, "val", fmtKpi(key, v));
  }

  // ---- agent tiles ---------------------------------------------------------
  function makeTile(agentId) {
    const root = h("div", "tile level-ok");
    root.dataset.agent = agentId;
    const head = h("div", "tile-head");
    const id = h("span", "tile-id", agentId);
    const glyph = h("span", "tile-glyph");
    const badge = h("span", "badge");
    const score = h("span", "tile-score");
    head.append(id, glyph, score, badge);
    const kpis = h("div", "tile-kpis");
    const cells = {};
    for (const k of ALL_TILE_KPIS) {
      cells[k] = makeKpiCell(k);
      kpis.append(cells[k].root);
    }
    const flags = h("div", "tile-flags");
    // Three parts so a long reason gives way (ellipsis) while the state and the time in state stay whole.
    const stateLine = h("div", "tile-state");
    const stateName = h("span", "tile-state-name");
    const stateReason = h("span", "tile-state-reason");
    const stateTime = h("span", "tile-state-time");
    stateLine.append(stateName, stateReason, stateTime);
    root.append(head, kpis, flags, stateLine);
    return { root, refs: { badge, cells, flags, glyph, score, stateLine, stateName, stateReason, stateTime }, cache: {},
      agent: null };
  }

  // "BREAK · lunch · 17:32": the state, its reason and how long the agent has been in it, counting up.
  // The full state and reason are the line's tooltip, for a reason cut short on a small tile.
  function updateStateLine(t, a) {
    const c = t.cache, r = t.refs;
    const state = a.state || "offline";
    const name = (STATE_LABELS[state] || state).toUpperCase();
    const reason = a.reason ? " · " + a.reason : "";
    const since = parseTs(a.state_since);
    setText(r.stateName, c, "stateName", name);
    setText(r.stateReason, c, "stateReason", reason);
    setText(r.stateTime, c, "stateTime", Number.isNaN(since) ? "" : " · " + fmtDuration((serverNow() - since) / 1000));
    setAttr(r.stateLine, c, "stateTitle", "title", name + reason);
  }

  function updateTile(t, a) {
    const c = t.cache;
    const level = worstLevel(a, "agent", a.agent_id);
    const state = a.state || "offline";
    let cls = "tile level-" + level;
    if (state === "offline") cls += " is-offline";
    setClass(t.root, c, "cls", cls);
    setAttr(t.root, c, "lvl", "data-level", level);
    setAttr(t.root, c, "team", "data-team", a.team || "");
    setAttr(t.root, c, "title", "title", a.agent_id + (a.team ? " · " + a.team : "") + " · " + state);
    setText(t.refs.glyph, c, "glyph", level === "critical" ? "!!" : level === "warning" ? "!" : "");
    setAttr(t.refs.badge, c, "state", "data-state", state);
    setText(t.refs.badge, c, "stateText", STATE_LABELS[state] || state);
    setAttr(t.refs.stateLine, c, "stateAttr", "data-state", state);
    updateStateLine(t, a);
    t.agent = a;
    setText(t.refs.score, c, "score", isNum(a.score) ? fmtScore(a.score) : "");
    setAttr(t.refs.score, c, "scoreTitle", "title", isNum(a.score) ? "scorecard points" : "");
    const shown = visibleCells(a, "agent", a.agent_id, density.cells);
    for (const k of ALL_TILE_KPIS) {
      const cell = t.refs.cells[k];
      updateKpiCell(cell, shown.has(k) ? "kpi" : "kpi off", a, k, "agent", a.agent_id);
    }
    updateFlags(t.refs.flags, c, a, "agent", a.agent_id, shown);
  }

  // Which KPI cells a tile has room for. A large tile keeps the six defaults in fixed
  // places (eyes learn where AHT is), except that a breached extra KPI (CSAT, ...) takes
  // the place of an empty default. A smaller tile shows breached KPIs first, then those
  // with a value, so a ticket agent shows Resp rather than "–".
  // A KPI applies to an agent when it has a value; a count that stays 0 (outbound counts of an inbound agent) says nothing.
  function applies(kp, k) { return isNum(kp[k]) && !(kp[k] === 0 && KPI_META[k] && !KPI_META[k].ratio); }
  function visibleCells(entity, scope, id, n) {
    const kp = entity.kpis || {};
    const breached = (k) => kpiLevel(entity, k, scope, id) !== "ok";
    const rank = (k) => (breached(k) ? 0 : isNum(kp[k]) && kp[k] !== 0 ? 1 : 2);
    if (n >= TILE_KPIS.length) {
      const shown = new Set(TILE_KPIS);
      // Extras in order: breached ones first, then those with a value, each taking the place of a default cell
      // that is empty for this agent (or, for a breached extra, the least telling default).
      const extras = EXTRA_KPIS.filter(breached).concat(EXTRA_KPIS.filter((x) => !breached(x) && applies(kp, x)));
      for (const x of extras) {
        if (!breached(x)) {
          const empty = TILE_KPIS.find((k) => shown.has(k) && !applies(kp, k));
          if (empty === undefined) break;
          shown.delete(empty);
          shown.add(x);
          continue;
        }
        let drop = null;
        for (const k of TILE_KPIS) {
          if (shown.has(k) && !breached(k) && (drop === null || rank(k) >= rank(drop))) drop = k;
        }
        if (drop === null) break;
        shown.delete(drop);
        shown.add(x);
      }
      return shown;
    }
    const order = ALL_TILE_KPIS.filter((k) => TILE_KPIS.includes(k) || breached(k))
      .sort((x, y) => rank(x) - rank(y) || ALL_TILE_KPIS.indexOf(x) - ALL_TILE_KPIS.indexOf(y));
    return new Set(order.slice(0, n));
  }

  // Breached KPIs without a visible cell, as short labels, so a small tile (or a KPI
  // that has no cell, like CSAT) still says why it is coloured.
  function updateFlags(node, cache, entity, scope, id, shown) {
    const parts = [];
    for (const k of breachedKeys(entity)) {
      if (shown && shown.has(k)) continue;
      const v = entity.kpis ? entity.kpis[k] : null;
      if (!isNum(v)) continue;
      const snoozed = snoozedUntil(scope, id, k) > 0;
      const lv = snoozed ? "snoozed" : kpiLevel(entity, k, scope, id);
      if (lv === "ok") continue;
      parts.push(k + ":" + lv);
    }
    parts.sort();
    const key = parts.join(",");
    if (cache.flags === key) return;
    cache.flags = key;
    node.textContent = "";
    for (const p of parts) {
      const [k, lv] = p.split(":");
      const f = h("span", "flag flag-" + lv, kpiLabel(k));
      f.dataset.kpi = k;
      node.append(f);
    }
  }

  function renderAgents(list) {
    const seen = new Set();
    for (const a of list) {
      if (!a || a.agent_id == null) continue;
      seen.add(a.agent_id);
      let t = tiles.get(a.agent_id);
      if (!t) { t = makeTile(a.agent_id); tiles.set(a.agent_id, t); }
      updateTile(t, a);
    }
    for (const [id, t] of tiles) {
      if (!seen.has(id)) { t.root.remove(); tiles.delete(id); }
    }
    // Reorder only when membership, team (or, on a leaderboard, rank) changed; most snapshots touch text only.
    const score = (a) => (isNum(a.score) ? a.score : -Infinity);
    const ordered = list.filter((a) => a && a.agent_id != null).slice().sort(byScore
      ? (x, y) => score(y) - score(x) || cmp(String(x.agent_id), String(y.agent_id))
      : (x, y) => cmp(x.team || "", y.team || "") || cmp(String(x.agent_id), String(y.agent_id)));
    const key = ordered.map((a) => (a.team || "") + "/" + a.agent_id).join("\n");
    if (key !== tileOrderKey) {
      tileOrderKey = key;
      orderedIds = ordered.map((a) => a.agent_id);
      const frag = document.createDocumentFragment();
      for (const a of ordered) frag.append(tiles.get(a.agent_id).root);
      el.grid.append(frag);
      fitGrid();
    }
    el.gridEmpty.hidden = ordered.length > 0;
    if (!ordered.length) {
      el.gridEmpty.textContent = teamFilter ? "No agents in team " + teamFilter : "No agents yet";
    }
  }
  function cmp(a, b) { return a < b ? -1 : a > b ? 1 : 0; }

  // Pick the largest tile preset at which every agent fits, then scale it up to use the free space.
  // When not even the smallest fits, the agents go on pages of that size which rotate every ?rotate= seconds,
  // with a page indicator: every agent is on some page, none is hidden.
  function fitGrid() {
    const n = tiles.size;
    const W = el.grid.clientWidth, H = el.grid.clientHeight;
    if (!n || !W || !H) return;
    const layout = (w, hgt, count) => {
      const cols = Math.max(1, Math.floor((W + GRID_GAP_PX) / (w + GRID_GAP_PX)));
      const rows = Math.ceil(count / cols);
      return { cols, rows, fits: rows * (hgt + GRID_GAP_PX) - GRID_GAP_PX <= H };
    };
    let chosen = null, scale = 1, perPage = n;
    for (const d of DENSITIES) {
      if (layout(d.w, d.h, n).fits) { chosen = d; break; }
    }
    if (chosen) {
      let lo = 1, hi = MAX_SCALE;
      for (let i = 0; i < 12; i++) {
        const mid = (lo + hi) / 2;
        if (layout(chosen.w * mid, chosen.h * mid, n).fits) lo = mid; else hi = mid;
      }
      scale = lo;
    } else {
      chosen = PAGE_DENSITY;
      const cols = layout(chosen.w, chosen.h, 1).cols;
      const rows = Math.max(1, Math.floor((H + GRID_GAP_PX) / (chosen.h + GRID_GAP_PX)));
      perPage = cols * rows;
    }
    const lay = layout(chosen.w * scale, chosen.h * scale, Math.min(n, perPage));
    // Rows take up vertical slack (up to a third more) so the board reaches the bottom.
    let rowH = Math.floor(chosen.h * scale);
    if (lay.fits) {
      const fill = Math.floor((H - (lay.rows - 1) * GRID_GAP_PX) / lay.rows);
      rowH = Math.max(rowH, Math.min(fill, Math.floor(rowH * 1.33)));
    }
    const g = el.grid;
    if (g.dataset.density !== chosen.name) {
      g.dataset.density = chosen.name;
      density = chosen;
      scheduleRender();                            // tiles pick their cells per density
    }
    const cols = "repeat(" + lay.cols + ", minmax(0, 1fr))";
    if (g.style.gridTemplateColumns !== cols) g.style.gridTemplateColumns = cols;
    const rows = rowH + "px";
    if (g.style.gridAutoRows !== rows) g.style.gridAutoRows = rows;
    g.style.setProperty("--s", scale.toFixed(3));
    const count = Math.max(1, Math.ceil(n / perPage));
    if (count !== page.count || perPage !== page.size) {
      page = { index: page.index % count, count, size: perPage, since: Date.now() };
    }
    applyPage();
  }

  function applyPage() {
    const from = page.index * page.size, to = from + page.size;
    orderedIds.forEach((id, i) => {
      const t = tiles.get(id);
      if (!t) return;
      const off = i < from || i >= to;
      if (t.cache.offPage !== off) { t.root.classList.toggle("off-page", off); t.cache.offPage = off; }
    });
    const paged = page.count > 1;
    el.pageInfo.hidden = !paged;
    document.body.classList.toggle("paged", paged);
    const teamsKey = paged ? page.index + "/" + page.count : "";
    if (teamsKey !== lastTeamsKey) { lastTeamsKey = teamsKey; scheduleRender(); }
    if (paged) {
      const last = Math.min(orderedIds.length, to);
      const text = "page " + (page.index + 1) + " / " + page.count + " · agents " + (from + 1) + "–" + last
        + " of " + orderedIds.length;
      if (el.pageInfo.textContent !== text) el.pageInfo.textContent = text;
    }
  }

  function pageTeams() {
    if (page.count <= 1) return null;
    const out = new Set();
    const from = page.index * page.size;
    for (const id of orderedIds.slice(from, from + page.size)) out.add(agentTeam.get(id));
    return out;
  }

  function rotatePage() {
    if (Date.now() - page.since >= rotateMs) turnPage(1);
  }

  // By hand, from a keyboard at the screen: → or PageDown the next page, ← or PageUp the one before; the page
  // chosen then stays its full ?rotate= time.
  function turnPage(step) {
    if (page.count <= 1) return;
    page = Object.assign({}, page, { index: (page.index + step + page.count) % page.count, since: Date.now() });
    applyPage();
  }

  document.addEventListener("keydown", (e) => {
    if (e.target instanceof HTMLInputElement || e.target instanceof HTMLTextAreaElement) return;
    const step = { ArrowRight: 1, PageDown: 1, ArrowLeft: -1, PageUp: -1 }[e.key];
    if (!step) return;
    e.preventDefault();
    turnPage(step);
  });

  // ---- queue strip -----------------------------------------------------------
  // One card per queue (and the floor's totals when there are several): calls waiting, the longest wait counting
  // up every second between snapshots, service level, ASA, abandon rate; coloured by the queue rules. Then the
  // agents by state.
  const queueCards = new Map();        // queue name ("" for the floor) -> {root, refs, cache, q}
  let queueOrderKey = "";

  function makeQueueCard(name) {
    const root = h("div", "queue-card level-ok");
    root.dataset.queue = name;
    const title = h("div", "queue-name", name || "all queues");
    const cells = {};
    const row = h("div", "queue-kpis");
    for (const k of QUEUE_CELLS) {
      cells[k] = makeKpiCell(k, "kpi qkpi");
      row.append(cells[k].root);
    }
    root.append(title, row);
    return { root, refs: { cells, title }, cache: {}, q: null };
  }

  function queueEntity(q) {
    const kpis = Object.assign({}, q.kpis || {});
    kpis.waiting = q.waiting;
    kpis.longest_wait_seconds = liveLongestWait(q);
    const levels = Object.assign({}, q.levels || {});
    // The longest wait grows between snapshots: colour it by the rule as it counts, never below the server's level.
    const lv = levelByRule(queueThresholds.longest_wait_seconds, kpis.longest_wait_seconds);
    if (LEVEL_RANK[lv] > LEVEL_RANK[levels.longest_wait_seconds || "ok"]) levels.longest_wait_seconds = lv;
    return { kpis, levels, breaches: q.breaches || [] };
  }
  function liveLongestWait(q) {
    const oldest = parseTs(q.oldest_entry);
    if (!Number.isNaN(oldest)) return Math.max(0, (serverNow() - oldest) / 1000);
    return isNum(q.longest_wait_seconds) ? q.longest_wait_seconds : null;
  }
  function levelByRule(rule, v) {
    if (!rule || !isNum(v)) return "ok";
    if (isNum(rule.critical_above) && v > rule.critical_above) return "critical";
    if (isNum(rule.warning_above) && v > rule.warning_above) return "warning";
    if (isNum(rule.critical_below) && v < rule.critical_below) return "critical";
    if (isNum(rule.warning_below) && v < rule.warning_below) return "warning";
    return "ok";
  }

  function updateQueueCard(c) {
    const e = queueEntity(c.q);
    let worst = "ok";
    for (const k of QUEUE_CELLS) {
      updateKpiCell(c.refs.cells[k], "kpi qkpi", e, k, null, null);
      const lv = kpiLevel(e, k, null, null);
      if (LEVEL_RANK[lv] > LEVEL_RANK[worst]) worst = lv;
    }
    setClass(c.root, c.cache, "cls", "queue-card level-" + worst);
    setAttr(c.root, c.cache, "lvl", "data-level", worst);
  }

  // Most urgent first (level, then longest wait), after the floor's totals: on a floor with more queues than
  // fit, the ones that need attention are the ones on screen, and "+N more" says how many are not.
  function queueUrgency(q) {
    const e = queueEntity(q);
    let worst = 0;
    for (const k of QUEUE_CELLS) worst = Math.max(worst, LEVEL_RANK[kpiLevel(e, k, null, null)]);
    return [worst, isNum(e.kpis.longest_wait_seconds) ? e.kpis.longest_wait_seconds : -1];
  }
  function renderQueues(list, floorQueue, floorStates) {
    const shown = (list || []).slice().sort((x, y) => {
      const [lx, wx] = queueUrgency(x), [ly, wy] = queueUrgency(y);
      return ly - lx || wy - wx || cmp(x.queue, y.queue);
    });
    if (shown.length > 1 && floorQueue) shown.unshift(Object.assign({ queue: "" }, floorQueue));
    const seen = new Set();
    for (const q of shown) {
      seen.add(q.queue);
      let c = queueCards.get(q.queue);
      if (!c) { c = makeQueueCard(q.queue); queueCards.set(q.queue, c); }
      c.q = q;
      updateQueueCard(c);
    }
    for (const [name, c] of queueCards) if (!seen.has(name)) { c.root.remove(); queueCards.delete(name); }
    const key = shown.map((q) => q.queue).join("\n");
    if (key !== queueOrderKey) {
      queueOrderKey = key;
      const frag = document.createDocumentFragment();
      frag.append(statesCard.root);
      for (const q of shown) frag.append(queueCards.get(q.queue).root);
      frag.append(queueMore);
      el.queues.append(frag);
    }
    renderStates(floorStates);
    const any = shown.length > 0 || !!floorStates;
    if (el.queues.hidden === any) { el.queues.hidden = !any; fitGrid(); }
    fitQueueStrip();
  }
  const queueMore = h("div", "queue-more");
  function moreQueuesText(n) { return n ? "+" + n + " more queue" + (n === 1 ? "" : "s") : ""; }
  // The strip shows the queue cards that fit whole (the most urgent, as they come first) and leaves the rest off;
  // "+N more queues" counts those and takes a place of its own at the end, so it never covers a card.
  function fitQueueStrip() {
    const cards = [];
    for (const node of el.queues.children) if (node.classList.contains("queue-card")) cards.push(node);
    let fit = cards.length;
    if (!el.queues.hidden && cards.length) {
      const style = getComputedStyle(el.queues);
      const gap = parseFloat(style.columnGap) || 0;
      const room = el.queues.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight)
        - statesCard.root.offsetWidth - gap - 1;   // 1 px for sub-pixel rounding
      const cardW = parseFloat(getComputedStyle(cards[0]).minWidth) || cards[0].offsetWidth;
      if (cards.length * cardW + (cards.length - 1) * gap > room) {
        // Measure the badge with its longest text: then fewer hidden cards never make it outgrow its place.
        queueMore.textContent = moreQueuesText(cards.length);
        queueMore.hidden = false;
        fit = Math.max(0, Math.floor((room - queueMore.offsetWidth) / (cardW + gap)));
      }
    }
    cards.forEach((node, i) => { const off = i >= fit; if (node.hidden !== off) node.hidden = off; });
    const text = moreQueuesText(cards.length - fit);
    if (queueMore.textContent !== text) queueMore.textContent = text;
    queueMore.hidden = !text;
  }
  function tickQueues() {
    for (const c of queueCards.values()) if (c.q) updateQueueCard(c);
  }

  const statesCard = (() => {
    const root = h("div", "states-card");
    const counts = {};
    for (const st of STATE_ORDER) {
      const item = h("div", "state-count");
      item.dataset.state = st;
      const n = h("span", "state-n", "0");
      item.append(n, h("span", "state-label", STATE_LABELS[st]));
      counts[st] = n;
      root.append(item);
    }
    return { root, counts, cache: {} };
  })();
  function renderStates(counts) {
    for (const st of STATE_ORDER) {
      setText(statesCard.counts[st], statesCard.cache, st, String(counts && isNum(counts[st]) ? counts[st] : 0));
    }
  }

  // Time in state on every tile counts up between snapshots.
  function tickTiles() {
    for (const t of tiles.values()) if (t.agent) updateStateLine(t, t.agent);
  }

  // ---- team cards ----------------------------------------------------------
  function makeTeamCard(team) {
    const root = h("div", "team-card level-ok");
    root.dataset.team = team;
    const head = h("div", "team-head");
    const name = h("span", "team-name", team);
    const count = h("span", "team-count");
    // Breach flags have a column of their own in the head (see .team-head), so they never crowd the agent count.
    const flags = h("div", "tile-flags team-flags");
    const score = h("span", "tile-score");
    head.append(name, flags, score, count);
    const kpis = h("div", "team-kpis");
    const cells = {};
    for (const k of TILE_KPIS) { cells[k] = makeKpiCell(k); kpis.append(cells[k].root); }
    root.append(head, kpis);
    return { root, refs: { count, cells, flags, score }, cache: {} };
  }
  function renderTeams(list) {
    const seen = new Set();
    for (const tm of list) {
      if (!tm || tm.team == null) continue;
      seen.add(tm.team);
      let c = teamCards.get(tm.team);
      if (!c) { c = makeTeamCard(tm.team); teamCards.set(tm.team, c); }
      const level = worstLevel(tm, "team", tm.team);
      setClass(c.root, c.cache, "cls", "team-card level-" + level);
      setAttr(c.root, c.cache, "lvl", "data-level", level);
      setText(c.refs.count, c.cache, "count", isNum(tm.agents) ? tm.agents + (tm.agents === 1 ? " agent" : " agents") : "");
      setText(c.refs.score, c.cache, "score", isNum(tm.score) ? fmtScore(tm.score) : "");
      for (const k of TILE_KPIS) updateKpiCell(c.refs.cells[k], "kpi", tm, k, "team", tm.team);
      updateFlags(c.refs.flags, c.cache, tm, "team", tm.team, TEAM_CELLS);
    }
    for (const [name, c] of teamCards) {
      if (!seen.has(name)) { c.root.remove(); teamCards.delete(name); }
    }
    const names = list.filter((t) => t && t.team != null).map((t) => t.team).sort(cmp);
    const key = names.join("\n");
    if (key !== teamOrderKey) {
      teamOrderKey = key;
      const frag = document.createDocumentFragment();
      for (const n of names) frag.append(teamCards.get(n).root);
      el.teams.append(frag);
    }
  }

  // ---- header --------------------------------------------------------------
  let headerCells = {};
  let headerScore = null;
  // Header cells, agent tiles and team cards are rebuilt when the catalogue changes.
  function rebuildKpiViews() {
    for (const node of el.floorKpis.querySelectorAll(".hkpi[data-kpi], .hkpi-score")) node.remove();
    headerCells = {};
    const before = $("alert-count-box");
    for (const k of HEADER_KPIS) {
      const root = h("div", "hkpi");
      root.dataset.kpi = k;
      const value = h("span", "hkpi-value", DASH);
      root.append(h("span", "hkpi-label", kpiLabel(k)), value);
      el.floorKpis.insertBefore(root, before);
      headerCells[k] = { root, value, cache: {} };
    }
    const score = h("div", "hkpi hkpi-score");
    headerScore = { root: score, value: h("span", "hkpi-value", DASH), cache: {} };
    score.append(h("span", "hkpi-label", "Score"), headerScore.value);
    score.hidden = true;
    el.floorKpis.insertBefore(score, before);
    for (const t of tiles.values()) t.root.remove();
    tiles.clear();
    tileOrderKey = "";
    for (const c of teamCards.values()) c.root.remove();
    teamCards.clear();
    teamOrderKey = "";
    for (const c of queueCards.values()) c.root.remove();
    queueCards.clear();
    queueOrderKey = "";
  }
  function renderHeader(entity, scope, id) {
    for (const k of HEADER_KPIS) {
      const cell = headerCells[k];
      if (cell) updateKpiCell(cell, "hkpi", entity || { kpis: {} }, k, scope, id);
    }
    if (headerScore) {
      const score = entity ? entity.score : undefined;
      headerScore.root.hidden = score === undefined;
      setText(headerScore.value, headerScore.cache, "val", fmtScore(score));
    }
  }

  // ---- window switch -------------------------------------------------------
  function renderWindowSwitch(windows) {
    const list = Array.isArray(windows) && windows.length ? windows : currentWindow ? [currentWindow] : [];
    const key = list.join(",");
    if (key !== windowsKey) {
      windowsKey = key;
      el.windowSwitch.textContent = "";
      for (const w of list) {
        const b = h("button", "win-btn", w);
        b.type = "button";
        b.dataset.window = w;
        el.windowSwitch.append(b);
      }
    }
    for (const b of el.windowSwitch.children) {
      const on = b.dataset.window === currentWindow;
      b.classList.toggle("active", on);
      b.setAttribute("aria-pressed", on ? "true" : "false");
    }
  }
  el.windowSwitch.addEventListener("click", (ev) => {
    const b = ev.target.closest("button[data-window]");
    if (!b || b.dataset.window === currentWindow) return;
    setWindow(b.dataset.window, true);
    document.body.classList.add("is-switching");   // old-window numbers until the new snapshot
    renderWindowSwitch(snapshot && snapshot.windows);
    connect(true);
  });
  // The URL only changes on a deliberate switch (or to correct a ?window= the server
  // did not accept), so a kiosk's bookmarked address stays as it was typed.
  function setWindow(w, updateUrl) {
    currentWindow = w;
    const p = new URLSearchParams(location.search);
    if (updateUrl && p.get("window") !== w) {
      p.set("window", w);
      history.replaceState(history.state, "", location.pathname + "?" + p.toString() + location.hash);
    }
  }

  // ---- alerts --------------------------------------------------------------
  function alertInView(a) {
    if (!teamFilter) return true;
    if (a.scope === "team") return a.team === teamFilter;
    if (a.scope === "agent") return (a.team || agentTeam.get(a.agent_id)) === teamFilter;
    return false;                                   // floor alerts stay off a team kiosk
  }
  function alertTarget(a) {
    if (a.scope === "agent") return { scope: "agent", id: a.agent_id };
    if (a.scope === "team") return { scope: "team", id: a.team };
    return { scope: a.scope || "floor", id: null };   // queue, campaign and floor alerts cannot be snoozed
  }
  function alertTime(rec) {
    const t = parseTs(rec.alert.ts);
    return Number.isNaN(t) ? rec.receivedAt : t;
  }

  function upsertAlert(a, fromSnapshot) {
    if (!a || a.id == null) return;
    const now = Date.now();
    const prev = alerts.get(a.id);
    // A snapshot built just before a resolve went out must not bring the alert back.
    if (fromSnapshot && prev && prev.alert.status === "resolved" && now - prev.resolvedAt < LOCAL_GRACE_MS) return;
    const merged = Object.assign({}, prev ? prev.alert : {}, a);
    if (!merged.status) merged.status = "firing";
    const rec = prev || { alert: merged, receivedAt: now, localAckAt: 0, escalatedAt: 0 };
    if (prev && prev.alert.severity && a.severity && prev.alert.severity !== a.severity
        && LEVEL_RANK[a.severity] > LEVEL_RANK[prev.alert.severity]) {
      rec.escalatedAt = now;
    }
    // A snapshot assembled just before an ack reached the server still says false.
    if (fromSnapshot && prev && prev.alert.acknowledged && !a.acknowledged && now - rec.localAckAt < LOCAL_GRACE_MS) {
      merged.acknowledged = true;
    }
    if (!fromSnapshot) rec.receivedAt = now;
    if (prev && prev.alert.status === "resolved" && merged.status !== "resolved") rec.resolvedAt = 0;
    if (merged.status === "resolved" && !rec.resolvedAt) rec.resolvedAt = now;
    rec.alert = merged;
    alerts.set(a.id, rec);
  }

  function mergeSnapshotAlerts(list, authoritative) {
    const seen = new Set();
    for (const a of list || []) { if (a && a.id != null) { seen.add(a.id); upsertAlert(a, true); } }
    const now = Date.now();
    for (const rec of alerts.values()) {
      if (rec.alert.status === "resolved" || seen.has(rec.alert.id)) continue;
      // A resolve we never saw (e.g. while disconnected): the snapshot no longer lists it.
      if (authoritative || now - rec.receivedAt > GONE_GRACE_MS) {
        rec.alert = Object.assign({}, rec.alert, { status: "resolved" });
        rec.resolvedAt = now;
      }
    }
  }

  function pruneHistory() {
    const resolved = [...alerts.values()].filter((r) => r.alert.status === "resolved")
      .sort((x, y) => y.resolvedAt - x.resolvedAt);
    for (const r of resolved.slice(HISTORY_MAX)) {
      alerts.delete(r.alert.id);
      const e = alertEls.get(r.alert.id);
      if (e) { e.root.remove(); alertEls.delete(r.alert.id); }
    }
  }

  function makeAlertItem(id) {
    const root = h("li", "alert");
    root.dataset.alertId = id;
    const main = h("div", "alert-main");
    const sev = h("span", "alert-sev");
    const kpi = h("span", "alert-kpi");
    const scope = h("span", "alert-scope");
    const time = h("span", "alert-time");
    main.append(sev, kpi, scope);
    const detail = h("div", "alert-detail");
    const meta = h("div", "alert-meta");
    const note = h("span", "alert-note");
    meta.append(time, note);
    const body = h("div", "alert-body");
    body.append(main, detail, meta);
    const actions = h("div", "alert-actions");
    const ack = h("button", "btn btn-ack", "Acknowledge");
    ack.type = "button"; ack.dataset.action = "ack";
    const snooze = h("button", "btn btn-snooze", "Snooze");
    snooze.type = "button"; snooze.dataset.action = "snooze";
    actions.append(ack, snooze);
    root.append(body, actions);
    return { root, refs: { sev, kpi, scope, time, detail, note, ack, snooze }, cache: {} };
  }

  function updateAlertItem(e, rec) {
    const a = rec.alert, c = e.cache, r = e.refs;
    const target = alertTarget(a);
    const snoozedTill = target.id != null ? snoozedUntil(target.scope, target.id, a.kpi) : 0;
    const resolved = a.status === "resolved";
    const sev = a.severity === "critical" ? "critical" : "warning";
    let cls = "alert severity-" + sev;
    if (resolved) cls += " resolved";
    if (a.acknowledged) cls += " acknowledged";
    if (snoozedTill) cls += " snoozed";
    if (rec.escalatedAt && Date.now() - rec.escalatedAt < ESCALATED_FLASH_MS && !resolved) cls += " escalated";
    setClass(e.root, c, "cls", cls);
    setAttr(e.root, c, "sev", "data-severity", sev);
    setAttr(e.root, c, "status", "data-status", resolved ? "resolved" : "firing");
    setText(r.sev, c, "sevText", resolved ? "OK" : sev === "critical" ? "CRIT" : "WARN");
    setText(r.kpi, c, "kpi", kpiLabel(a.kpi));
    let who = "floor", team = null;
    if (a.scope === "agent") {
      who = String(a.agent_id);
      team = teamFilter ? null : a.team || agentTeam.get(a.agent_id);
    } else if (a.scope === "team") who = String(a.team);
    else if (a.scope === "queue") who = "queue " + a.queue;
    else if (a.scope === "campaign") who = "campaign " + a.campaign;
    setText(r.scope, c, "scope", who);
    setAttr(r.scope, c, "scopeKind", "data-scope", a.scope || "floor");
    setText(r.time, c, "time", fmtClock(resolved && rec.resolvedAt ? rec.resolvedAt : alertTime(rec)));
    let detail = fmtKpi(a.kpi, a.value);
    if (isNum(a.value) && isNum(a.threshold)) {
      const [v, t] = fmtPair(a.kpi, a.value, a.threshold);
      detail = v + (a.value >= a.threshold ? " above " : " below ") + t;
    }
    if (a.window) detail += " · " + a.window;
    if (team) detail += " · " + team;
    if (resolved) detail = "was " + detail;
    setText(r.detail, c, "detail", detail);
    let note = "";
    if (resolved) note = "resolved";
    else if (snoozedTill) note = "snoozed until " + fmtClockShort(snoozedTill - skewMs);
    else if (a.acknowledged) note = "acknowledged";
    setText(r.note, c, "note", note);
    const ackDisabled = !!a.acknowledged || resolved;
    if (c.ackDis !== ackDisabled) { r.ack.disabled = ackDisabled; c.ackDis = ackDisabled; }
    setText(r.ack, c, "ackText", a.acknowledged ? "Acked" : "Acknowledge");
    // The protocol snoozes an agent or a team; a floor alert has nothing to snooze.
    const snoozeDisabled = target.id == null || resolved;
    if (c.snzDis !== snoozeDisabled) {
      r.snooze.disabled = snoozeDisabled;
      r.snooze.title = target.id == null ? target.scope + " alerts cannot be snoozed" : "";
      c.snzDis = snoozeDisabled;
    }
  }

  function renderAlerts() {
    pruneHistory();
    const active = [], resolved = [];
    for (const rec of alerts.values()) {
      if (!alertInView(rec.alert)) {
        const e = alertEls.get(rec.alert.id);
        if (e) { e.root.remove(); alertEls.delete(rec.alert.id); }
        continue;
      }
      (rec.alert.status === "resolved" ? resolved : active).push(rec);
    }
    active.sort((x, y) => alertTime(y) - alertTime(x) || cmp(String(y.alert.id), String(x.alert.id)));
    resolved.sort((x, y) => y.resolvedAt - x.resolvedAt);
    placeAlerts(el.alertList, active);
    placeAlerts(el.alertHistory, resolved);
    el.alertEmpty.hidden = active.length > 0;
    el.historyHead.hidden = resolved.length === 0;
    updateAlertMore();

    const unacked = active.filter((r) => !r.alert.acknowledged);
    const critical = unacked.some((r) => r.alert.severity === "critical");
    setText(el.alertCount, headerCache, "count", String(active.length));
    setText(el.alertUnacked, headerCache, "unacked",
      active.length ? (unacked.length ? unacked.length + " unacked" : "all acked") : "");
    const lvl = critical ? "critical" : unacked.length ? "warning" : "ok";
    setAttr(el.alertCountBox, headerCache, "alvl", "data-level", lvl);
  }
  const headerCache = {};

  // Nobody scrolls a TV: say how many active alerts are below the fold.
  function updateAlertMore() {
    const list = el.alertList;
    let hidden = 0;
    if (list.scrollHeight > list.clientHeight + 2) {
      const bottom = list.scrollTop + list.clientHeight;
      for (const item of list.children) if (item.offsetTop - list.offsetTop + item.offsetHeight > bottom + 2) hidden++;
    }
    const text = hidden ? "+" + hidden + " more below" : "";
    if (el.alertMore.textContent !== text) el.alertMore.textContent = text;
    el.alertMore.hidden = !hidden;
  }
  el.alertList.addEventListener("scroll", updateAlertMore, { passive: true });

  function placeAlerts(list, recs) {
    let prev = null;
    for (const rec of recs) {
      let e = alertEls.get(rec.alert.id);
      if (!e) { e = makeAlertItem(rec.alert.id); alertEls.set(rec.alert.id, e); }
      updateAlertItem(e, rec);
      const want = prev ? prev.nextSibling : list.firstChild;
      if (e.root !== want || e.root.parentNode !== list) list.insertBefore(e.root, want);
      prev = e.root;
    }
    // Anything after the last placed item no longer belongs in this list.
    while (prev ? prev.nextSibling : list.firstChild) {
      (prev ? prev.nextSibling : list.firstChild).remove();
    }
  }

  function onFeedClick(ev) {
    const b = ev.target.closest("button[data-action]");
    if (!b || b.disabled) return;
    const item = b.closest("[data-alert-id]");
    const rec = item && alerts.get(item.dataset.alertId);
    if (!rec) return;
    const a = rec.alert;
    if (!mayAct) return;
    const by = actorName();
    if (b.dataset.action === "ack") {
      const msg = { type: "ack", id: a.id };
      if (by) msg.by = by;
      if (!send(msg)) return;
      rec.alert = Object.assign({}, a, { acknowledged: true });
      rec.localAckAt = Date.now();
    } else if (b.dataset.action === "snooze") {
      const t = alertTarget(a);
      if (t.id == null) return;
      const minutes = parseInt(el.snoozeMinutes.value, 10) || 15;
      const msg = { type: "snooze", kpi: a.kpi, minutes };
      msg[t.scope === "agent" ? "agent_id" : "team"] = t.id;
      if (by) msg.by = by;
      if (!send(msg)) return;
      addSnooze(t.scope, t.id, a.kpi, serverNow() + minutes * 60000, true);
    }
    scheduleRender();
  }
  el.alertList.addEventListener("click", onFeedClick);

  // ---- messages ------------------------------------------------------------
  function onSnapshot(msg) {
    const now = Date.now();
    const asOf = parseTs(msg.as_of);
    if (!Number.isNaN(asOf)) skewMs = asOf - now;
    snapshot = msg;
    lastFreshAt = now;
    attempt = 0;                                   // a real snapshot, not just an open socket
    if (msg.window && msg.window !== currentWindow) setWindow(msg.window, params.has("window"));
    document.body.classList.remove("is-switching");
    if (msg.thresholds && typeof msg.thresholds === "object") thresholds = msg.thresholds;
    if (msg.queue_thresholds && typeof msg.queue_thresholds === "object") queueThresholds = msg.queue_thresholds;
    redisDown = null;                              // a snapshot was just read from Redis
    applyCatalogue(msg.catalogue);
    agentTeam.clear();
    for (const a of msg.agents || []) if (a && a.agent_id != null) agentTeam.set(a.agent_id, a.team);

    if (Array.isArray(msg.snoozes)) {
      // The snapshot is the server's truth; keep only our very recent local ones beside it.
      for (const [k, s] of snoozes) if (!(s.localAt && now - s.localAt < LOCAL_GRACE_MS)) snoozes.delete(k);
      for (const s of msg.snoozes) {
        if (!s) continue;
        const scope = s.agent_id != null ? "agent" : "team";
        addSnooze(scope, s.agent_id != null ? s.agent_id : s.team, s.kpi, parseTs(s.until), false);
      }
    }
    if (Array.isArray(msg.alerts)) mergeSnapshotAlerts(msg.alerts, !freshSinceConnect);
    freshSinceConnect = true;
    scheduleRender();
    updateStale();
    updateConn();
  }

  // A full-floor feed sends the whole snapshot once, then deltas: the agents that changed since the last
  // message ("changed" rows, "removed" ids) with everything else of a snapshot (teams, floor, alerts, ...).
  function onDelta(msg) {
    if (!snapshot || !Array.isArray(snapshot.agents) || snapshot.version !== msg.since) {
      // Not against what we hold (cannot happen on one socket): reconnect for a whole snapshot.
      if (ws) ws.close(1000, "resync");
      return;
    }
    const byId = new Map();
    for (const a of snapshot.agents) if (a && a.agent_id != null) byId.set(a.agent_id, a);
    for (const id of msg.removed || []) byId.delete(id);
    for (const a of msg.changed || []) if (a && a.agent_id != null) byId.set(a.agent_id, a);
    const agents = Array.from(byId.values());
    agents.sort((x, y) => (x.agent_id < y.agent_id ? -1 : x.agent_id > y.agent_id ? 1 : 0));
    const merged = Object.assign({}, msg, { type: "snapshot", agents });
    delete merged.changed;
    delete merged.removed;
    delete merged.since;
    onSnapshot(merged);
  }

  function onMessage(data) {
    let msg;
    try { msg = JSON.parse(data); } catch (_) { return; }
    if (!msg || typeof msg !== "object") return;
    switch (msg.type) {
      case "snapshot": onSnapshot(msg); break;
      case "delta": onDelta(msg); break;
      case "alert": upsertAlert(msg, false); scheduleRender(); break;
      case "ack": {
        const rec = alerts.get(msg.id);
        if (rec) {
          rec.alert = Object.assign({}, rec.alert, { acknowledged: msg.acknowledged !== false });
          rec.localAckAt = Date.now();
          scheduleRender();
        }
        break;
      }
      case "snooze": {
        const scope = msg.agent_id != null ? "agent" : "team";
        addSnooze(scope, msg.agent_id != null ? msg.agent_id : msg.team, msg.kpi, parseTs(msg.until), true);
        scheduleRender();
        break;
      }
      case "error":
        toast(msg.error || msg.message || "server error");
        if (/^Redis/.test(msg.message || "")) { redisDown = msg.message; updateConn(); }
        break;
      case "status":
        redisDown = msg.redis === false ? msg.message || "Redis unavailable" : null;
        updateConn();
        break;
      default: break;                              // pings and unknown types are invisible
    }
  }

  // ---- render scheduling ---------------------------------------------------
  let renderPending = false;
  function scheduleRender() {
    if (renderPending) return;
    renderPending = true;
    // rAF batches bursts; the timeout keeps a hidden or throttled tab current too.
    const run = () => { if (renderPending) { renderPending = false; render(); } };
    requestAnimationFrame(run);
    setTimeout(run, 150);
  }

  function render() {
    if (snapshot) {
      const agents = (snapshot.agents || []).filter((a) => !teamFilter || (a && a.team === teamFilter));
      renderAgents(agents);
      const teams = snapshot.teams || [];
      if (teamFilter) {
        const mine = teams.find((t) => t && t.team === teamFilter);
        renderTeams([]);
        renderHeader(mine, "team", teamFilter);
        renderQueues(snapshot.queues, snapshot.floor && snapshot.floor.queue, mine && mine.states);
      } else {
        // On a paged floor the team cards are those of the agents on this page, so both fit one screen.
        const onPage = pageTeams();
        renderTeams(onPage ? teams.filter((t) => t && onPage.has(t.team)) : teams);
        renderHeader(snapshot.floor, null, null);
        renderQueues(snapshot.queues, snapshot.floor && snapshot.floor.queue, snapshot.floor && snapshot.floor.states);
      }
      const asOf = parseTs(snapshot.as_of);
      setText(el.asOf, headerCache, "asof", Number.isNaN(asOf) ? DASH : fmtClock(asOf - skewMs));
    }
    renderWindowSwitch(snapshot && snapshot.windows);
    renderAlerts();
  }

  // ---- staleness and status ------------------------------------------------
  function updateStale() {
    const now = Date.now();
    const had = lastFreshAt > 0;
    const since = had ? lastFreshAt : pageLoadedAt;
    // An unexpected close is stale at once; a deliberate reconnect (window switch) only by time.
    const stale = now - since > STALE_AFTER_MS || (!wsOpen && had && reconnectAt > 0);
    if (el.stale.hidden === stale) el.stale.hidden = !stale;
    document.body.classList.toggle("is-stale", stale);
    if (!stale) return;
    el.staleSince.textContent = fmtClock(since);
    let detail;
    if (wsOpen && redisDown) detail = redisDown;
    else if (wsOpen) detail = had ? "no update for " + Math.round((now - since) / 1000) + " s" : "connected, waiting for data";
    else if (reconnectAt) detail = "connection lost · retrying in " + Math.max(0, Math.ceil((reconnectAt - now) / 1000)) + " s";
    else detail = "connecting…";
    if (el.staleDetail.textContent !== detail) el.staleDetail.textContent = detail;
  }

  function setConn(state, text) {
    if (el.conn.dataset.state !== state) el.conn.dataset.state = state;
    if (el.conn.textContent !== text) el.conn.textContent = text;
  }
  function updateConn() {
    if (wsOpen && redisDown) setConn("down", "Redis down");
    else if (wsOpen && lastFreshAt && Date.now() - lastFreshAt > STALE_AFTER_MS) setConn("stalled", "stalled");
    else if (wsOpen && snapshot && snapshot.status === "rebuilding") setConn("stalled", "rebuilding…");
    else if (wsOpen) setConn("open", "live");
    else if (reconnectAt) setConn("reconnecting", "retry in " + Math.max(0, Math.ceil((reconnectAt - Date.now()) / 1000)) + " s");
    else setConn("connecting", "connecting…");
  }

  let toastTimer = null;
  function toast(text) {
    el.toast.textContent = String(text);
    el.toast.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.toast.hidden = true; }, TOAST_MS);
  }

  // ---- websocket -----------------------------------------------------------
  function wsUrl() {
    const u = new URL("ws", location.href);        // relative: honours a path prefix
    u.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    u.search = "";
    u.hash = "";
    if (currentWindow) u.searchParams.set("window", currentWindow);
    if (token) u.searchParams.set("token", token);
    u.searchParams.set("delta", "true");             // the whole floor once, then only the agents that change
    return u.toString();
  }

  function send(obj) {
    if (!ws || !wsOpen) { toast("Not connected — try again when the board is live"); return false; }
    try { ws.send(JSON.stringify(obj)); return true; } catch (_) { toast("Send failed"); return false; }
  }

  function connect(immediate) {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    reconnectAt = 0;
    if (immediate) attempt = 0;
    const gen = ++wsGen;
    if (ws) {
      const old = ws;
      ws = null;
      try { old.close(1000, "reconnect"); } catch (_) { /* already closed */ }
    }
    wsOpen = false;
    freshSinceConnect = false;
    updateConn();
    let sock;
    try { sock = new WebSocket(wsUrl()); } catch (err) { scheduleReconnect(gen); return; }
    ws = sock;
    let opened = false;
    sock.onopen = () => {
      if (gen !== wsGen) return;
      opened = true;
      wsOpen = true;
      if (!roleKnown) loadRole();
      updateConn();
      updateStale();
    };
    sock.onmessage = (ev) => { if (gen === wsGen) onMessage(ev.data); };
    sock.onclose = (ev) => {
      if (gen !== wsGen) return;
      // Policy violation / application codes carry a reason worth showing (e.g. a bad token).
      if (ev.code === 1008 || ev.code >= 4000) toast("Server closed the connection: " + (ev.reason || ev.code));
      wsOpen = false;
      ws = null;
      if (!opened && currentWindow) { explainRefusal(gen); return; }
      scheduleReconnect(gen);
    };
    sock.onerror = () => { /* onclose follows and reconnects */ };
  }

  // A refused handshake says nothing to the browser; the same question over HTTP gets the server's reason. A
  // window the server does not serve is shown with that reason and the board falls back to the default window.
  function explainRefusal(gen) {
    const u = new URL("api/snapshot", location.href);
    u.searchParams.set("window", currentWindow);
    if (token) u.searchParams.set("token", token);
    fetch(u.toString()).then((resp) => resp.json().then((body) => ({ status: resp.status, body })))
      .then(({ status, body }) => {
        if (gen !== wsGen) return;
        if (status === 400 && body && body.error) {
          toast("?window=" + currentWindow + " refused by the server: " + body.error + " — showing its default window");
          el.staleDetail.textContent = body.error;
          currentWindow = null;
          connect(true);
          return;
        }
        if (body && body.error) toast(body.error);
        scheduleReconnect(gen);
      })
      .catch(() => { if (gen === wsGen) scheduleReconnect(gen); });
  }

  function scheduleReconnect(gen) {
    if (gen !== wsGen) return;
    // 0.5 s doubling to 10 s, ±25 % jitter so a floor of screens doesn't reconnect in step.
    const nominal = Math.min(BACKOFF_MAX_MS, BACKOFF_INITIAL_MS * Math.pow(2, attempt));
    const delay = Math.min(BACKOFF_MAX_MS, nominal * (0.75 + Math.random() * 0.5));
    attempt = Math.min(attempt + 1, 30);
    reconnectAt = Date.now() + delay;
    reconnectTimer = setTimeout(() => { if (gen === wsGen) connect(false); }, delay);
    updateConn();
    updateStale();
  }

  // ---- clock: staleness, countdowns, snooze expiry ---------------------------
  let lastSnoozeCheck = "";
  setInterval(() => {
    updateStale();
    updateConn();
    tickTiles();
    tickQueues();
    rotatePage();
    const now = serverNow();
    let active = "";
    for (const [k, s] of snoozes) {
      if (s.until <= now) snoozes.delete(k); else active += k + ";";
    }
    const escalating = [...alerts.values()].some((r) => r.escalatedAt && Date.now() - r.escalatedAt < ESCALATED_FLASH_MS + 1000);
    if (active !== lastSnoozeCheck || escalating) { lastSnoozeCheck = active; scheduleRender(); }
  }, 1000);

  window.addEventListener("resize", () => { fitGrid(); fitQueueStrip(); });
  if (typeof ResizeObserver === "function") new ResizeObserver(() => fitGrid()).observe(el.grid);

  if (teamFilter) {
    el.scopeLabel.textContent = "Team " + teamFilter;
    document.body.classList.add("team-kiosk");
  }
  renderWindowSwitch(null);
  updateStale();
  connect(true);

  // Read-only hooks for debugging from the console and for tests.
  window.callpulseWallboard = {
    format: { duration: fmtDuration, percent: fmtPercent, response: fmtResponse, kpi: fmtKpi },
    state: () => ({ window: currentWindow, team: teamFilter, connected: wsOpen, lastFreshAt, alerts: alerts.size, agents: tiles.size,
      page: page.index, pages: page.count, perPage: page.size, density: density.name }),
    showPage: (i) => { page = Object.assign({}, page, { index: i % page.count, since: Date.now() }); applyPage(); },
  };
})();
