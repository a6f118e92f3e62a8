// The operator console: map, KPI tiles, live charts, alerts, gateways and quarantine, read from
// the API with the operator's key. The key lives in this tab's sessionStorage until "Forget key"
// (never in localStorage, where it would outlive the session on a shared control-room machine).
// The live stream is read with fetch (EventSource cannot send a key header) and resumed with
// Last-Event-ID after a break; the page says when what it shows is stale.
"use strict";

(() => {
  const { el, svg, number, rating, band, sparkline, ago } = UP;
  const $ = (id) => document.getElementById(id);
  const KEY_ITEM = "urbanpulse-key";
  const DOMAINS = ["water", "energy", "waste", "traffic", "environment"];
  // The quantity each domain's live chart follows.
  const CHARTED = {
    water: "flow", energy: "power", waste: "fill", traffic: "speed", environment: "pm25",
  };
  const CHART_MINUTES = 30;
  const STREAM_SILENT_S = 45; // the API sends a keep-alive every 15 s
  const KPI_STALE_S = 300; // the monitor refreshes every minute
  const KIOSK_ROTATE_S = 20;
  const params = new URLSearchParams(location.search);
  const kiosk = params.get("kiosk") === "1";

  const state = {
    key: "",
    session: null,
    catalog: new Map(), // kpi id -> catalog entry
    districts: [],
    gateways: [],
    sensors: [],
    current: new Map(), // "kpi|scope" -> value body
    series: new Map(), // "kpi|scope" -> [values]
    alerts: [],
    scope: params.get("scope") || "city",
    domain: DOMAINS.includes(params.get("domain")) ? params.get("domain") : "all",
    lastEventId: null,
    connected: false,
    lastByte: 0,
    lastReading: 0,
    computedAt: null,
    charts: new Map(DOMAINS.map((d) => [d, new Map()])), // domain -> minute -> {sum, n}
    seen: new Map(), // sensor id -> time of its last streamed reading
    abort: null,
    generation: 0,
    error: "",
    registrySignature: "",
  };

  // --- API -------------------------------------------------------------------------------
  async function api(path, options = {}) {
    const headers = { "X-API-Key": state.key, ...(options.headers || {}) };
    const response = await fetch(path, { ...options, headers });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({}));
      const error = new Error(problem.detail || `${response.status} ${response.statusText}`);
      error.status = response.status;
      throw error;
    }
    return response.json();
  }

  async function all(path) {
    const items = [];
    let cursor = null;
    do {
      const sep = path.includes("?") ? "&" : "?";
      const page = await api(`${path}${sep}limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      items.push(...page.items);
      cursor = page.next_cursor;
    } while (cursor);
    return items;
  }

  const can = (permission) => Boolean(state.session && state.session.permissions.includes(permission));

  // --- Freshness -------------------------------------------------------------------------
  function freshness() {
    const box = $("freshness");
    if (!state.key) {
      box.textContent = kiosk
        ? "no key: open this wall screen as /console?kiosk=1#key=<key>"
        : "no key: enter an API key to connect";
      box.className = "freshness stale";
      return;
    }
    const now = Date.now();
    const parts = [];
    let stale = false;
    if (!state.connected) {
      stale = true;
      parts.push(`STALE: stream disconnected${state.error ? ` (${state.error})` : ""}, reconnecting`);
    } else if (now - state.lastByte > STREAM_SILENT_S * 1000) {
      stale = true;
      parts.push(`STALE: nothing from the stream for ${Math.round((now - state.lastByte) / 1000)} s`);
    } else {
      parts.push("live");
    }
    if (state.lastReading) parts.push(`last reading ${ago(new Date(state.lastReading), now)}`);
    if (state.computedAt) {
      const age = (now - state.computedAt.getTime()) / 1000;
      if (age > KPI_STALE_S) { stale = true; parts.push(`KPIs STALE, computed ${ago(state.computedAt, now)}`); }
      else parts.push(`KPIs computed ${ago(state.computedAt, now)}`);
    }
    box.textContent = parts.join(" · ");
    box.className = `freshness ${stale ? "stale" : "fresh"}`;
    document.body.classList.toggle("is-stale", stale);
  }

  // --- Domain view -----------------------------------------------------------------------
  function renderDomains() {
    const nav = $("domains");
    nav.replaceChildren(...["all", ...DOMAINS].map((d) => el("button", {
      type: "button", "data-domain": d, "aria-pressed": String(state.domain === d),
      text: d === "all" ? "All" : d[0].toUpperCase() + d.slice(1),
    })));
  }

  $("domains").addEventListener("click", (event) => {
    const d = event.target.closest("button")?.dataset.domain;
    if (!d) return;
    state.domain = d;
    const url = new URL(location.href);
    if (d === "all") url.searchParams.delete("domain"); else url.searchParams.set("domain", d);
    history.replaceState(null, "", url.pathname + url.search);
    renderDomains(); renderAll();
  });

  const inDomain = (domain) => state.domain === "all" || domain === state.domain;

  // --- Map -------------------------------------------------------------------------------
  function rings(geometry) {
    if (!geometry) return [];
    const g = geometry.type === "Feature" ? geometry.geometry : geometry;
    if (!g) return [];
    if (g.type === "FeatureCollection") return g.features.flatMap((f) => rings(f));
    if (g.type === "Polygon") return g.coordinates.slice(0, 1);
    if (g.type === "MultiPolygon") return g.coordinates.map((p) => p[0]);
    return [];
  }

  // The hull of a district's sensors, for a district the registry has no boundary for.
  function hull(points) {
    const p = [...points].sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    if (p.length < 3) return p;
    const cross = (o, a, b) => (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
    const lower = [];
    for (const q of p) {
      while (lower.length >= 2 && cross(lower[lower.length - 2], lower[lower.length - 1], q) <= 0) lower.pop();
      lower.push(q);
    }
    const upper = [];
    for (const q of p.reverse()) {
      while (upper.length >= 2 && cross(upper[upper.length - 2], upper[upper.length - 1], q) <= 0) upper.pop();
      upper.push(q);
    }
    return lower.slice(0, -1).concat(upper.slice(0, -1));
  }

  function sensorStatus(sensor, gatewaysById, alerting) {
    if (alerting.has(sensor.id)) return ["alerting", "open alert"];
    if (sensor.status !== "active") return ["inactive", `status ${sensor.status}`];
    const gateway = gatewaysById.get(sensor.gateway_id);
    if (!gateway || !gateway.online) return ["offline", "gateway offline or never seen"];
    return ["ok", "gateway online"];
  }

  function renderMap() {
    const map = $("map");
    const located = state.sensors.filter((s) => s.latitude !== null && s.longitude !== null);
    const outlines = state.districts.map((d) => {
      const own = rings(d.boundary);
      if (own.length) return { district: d, rings: own, approximate: false };
      const pts = located.filter((s) => s.district_id === d.id).map((s) => [s.longitude, s.latitude]);
      return { district: d, rings: pts.length >= 3 ? [hull(pts)] : [], approximate: true };
    });
    const coords = outlines.flatMap((o) => o.rings.flat()).concat(located.map((s) => [s.longitude, s.latitude]));
    if (!coords.length) {
      map.replaceChildren(svg("text", { x: 20, y: 40, class: "map-note" }, "No district boundary or sensor position in the registry yet."));
      return;
    }
    const lons = coords.map((c) => c[0]);
    const lats = coords.map((c) => c[1]);
    const [west, east, south, north] = [Math.min(...lons), Math.max(...lons), Math.min(...lats), Math.max(...lats)];
    // Equirectangular, squeezed by cos(latitude): true shapes at city scale, no tiles needed.
    const kx = Math.cos(((south + north) / 2) * Math.PI / 180);
    const w = Math.max((east - west) * kx, 1e-6);
    const h = Math.max(north - south, 1e-6);
    const W = 1000;
    const pad = 30;
    const H = Math.round(Math.min(Math.max((W - 2 * pad) * (h / w) + 2 * pad, 300), 900));
    const scale = Math.min((W - 2 * pad) / w, (H - 2 * pad) / h);
    const ox = (W - w * scale) / 2;
    const oy = (H - h * scale) / 2;
    const xy = (lon, lat) => [ox + (lon - west) * kx * scale, oy + (north - lat) * scale];
    map.setAttribute("viewBox", `0 0 ${W} ${H}`);

    const gatewaysById = new Map(state.gateways.map((g) => [g.id, g]));
    const alerting = new Set(state.alerts.map((a) => a.subject_id));
    const districtLayer = svg("g", { class: "districts" });
    for (const o of outlines) {
      const d = o.district;
      const path = o.rings.map((r) => "M" + r.map((c) => xy(c[0], c[1]).map((v) => v.toFixed(1)).join(",")).join("L") + "Z").join(" ");
      const missed = [...state.current.values()].filter((v) => v.scope === d.id && v.rating === "missed" && inDomain(v.domain || (state.catalog.get(v.kpi_id) || {}).domain)).length;
      const label = `District ${d.name}${o.approximate ? " (outline from its sensors; no boundary in the registry)" : ""}: ${missed} KPI${missed === 1 ? "" : "s"} missed today. Select to show its KPIs.`;
      const group = svg("g", {
        class: `district${state.scope === d.id ? " selected" : ""}${o.approximate ? " approximate" : ""}`,
        tabindex: 0, role: "button", "aria-label": label, "data-district": d.id,
      }, svg("title", {}, label));
      if (path) group.append(svg("path", { d: path }));
      const pts = o.rings.flat().map((c) => xy(c[0], c[1]));
      if (pts.length) {
        const cx = pts.reduce((s, p) => s + p[0], 0) / pts.length;
        const top = Math.min(...pts.map((p) => p[1]));
        group.append(svg("text", { x: cx.toFixed(1), y: (top + 18).toFixed(1), class: "district-label" }, d.name));
      }
      districtLayer.append(group);
    }
    const gatewayLayer = svg("g", { class: "gateway-layer" });
    for (const g of state.gateways) {
      const own = located.filter((s) => s.gateway_id === g.id && inDomain(s.domain));
      if (!own.length) continue;
      const lon = own.reduce((s, x) => s + x.longitude, 0) / own.length;
      const lat = own.reduce((s, x) => s + x.latitude, 0) / own.length;
      const [x, y] = xy(lon, lat);
      const status = g.status !== "active" ? "inactive" : g.online ? "ok" : "offline";
      const label = `Gateway ${g.id}: ${g.online ? "online" : "offline"}${g.last_seen ? `, last seen ${ago(new Date(g.last_seen))}` : ", never seen"}; ${own.length} sensors`;
      gatewayLayer.append(svg("rect", {
        x: (x - 7).toFixed(1), y: (y - 7).toFixed(1), width: 14, height: 14,
        class: `gateway ${status}`, "data-gateway": g.id, role: "img", "aria-label": label,
      }, svg("title", {}, label)));
    }
    const sensorLayer = svg("g", { class: "sensor-layer" });
    for (const s of located) {
      if (!inDomain(s.domain)) continue;
      const [x, y] = xy(s.longitude, s.latitude);
      const [status, why] = sensorStatus(s, gatewaysById, alerting);
      const label = `Sensor ${s.id}, ${s.kind.replaceAll("_", " ")}, ${s.domain}: ${why}. Select for its recent readings.`;
      sensorLayer.append(svg("circle", {
        cx: x.toFixed(1), cy: y.toFixed(1), r: status === "alerting" ? 7 : 4.5,
        class: `sensor ${status}${state.seen.has(s.id) ? " reporting" : ""}`,
        tabindex: 0, role: "button", "aria-label": label, "data-sensor": s.id,
      }, svg("title", {}, label)));
    }
    map.replaceChildren(districtLayer, gatewayLayer, sensorLayer);
  }

  function onMapActivate(target) {
    const sensor = target.closest("[data-sensor]");
    if (sensor) { showSensor(sensor.dataset.sensor); return; }
    const district = target.closest("[data-district]");
    if (district) { setScope(district.dataset.district); }
  }
  $("map").addEventListener("click", (event) => onMapActivate(event.target));
  $("map").addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); onMapActivate(event.target); }
  });

  // --- Sensor detail ---------------------------------------------------------------------
  async function showSensor(id) {
    const panel = $("sensor-panel");
    panel.hidden = false;
    $("sensor-title").textContent = `Sensor ${id}`;
    $("sensor-detail").replaceChildren(el("p", { text: "loading…" }));
    $("sensor-title").focus();
    try {
      const sensor = await api(`/v1/sensors/${encodeURIComponent(id)}`);
      const rows = [];
      for (const last of sensor.last) {
        const end = new Date();
        const start = new Date(end.getTime() - 24 * 3600 * 1000);
        let points = [];
        try {
          const series = await api(`/v1/sensors/${encodeURIComponent(id)}/readings?quantity=${encodeURIComponent(last.quantity)}&start=${start.toISOString()}&end=${end.toISOString()}`);
          points = series.points;
        } catch (error) { points = []; }
        const label = `${last.quantity} over the last 24 h: ${points.length} points`;
        rows.push(el("tr", {},
          el("th", { scope: "row", text: last.quantity }),
          el("td", { class: "num", text: `${number(last.value)} ${last.unit}` }),
          el("td", { text: last.time ? ago(new Date(last.time)) : "nothing yet" }),
          el("td", {}, sparkline(points.map((p) => p.value), label, 160, 30)),
        ));
      }
      $("sensor-detail").replaceChildren(
        el("p", { text: `${sensor.kind.replaceAll("_", " ")} in ${sensor.district_id || "no district"}, gateway ${sensor.gateway_id || "none"}, status ${sensor.status}` }),
        el("table", { class: "readings" },
          el("caption", { text: "Newest value of each quantity, and the last 24 hours" }),
          el("thead", {}, el("tr", {}, ["Quantity", "Newest", "When", "24 h"].map((h) => el("th", { scope: "col", text: h })))),
          el("tbody", {}, rows)),
      );
    } catch (error) {
      $("sensor-detail").replaceChildren(el("p", { class: "error", text: `could not load: ${error.message}` }));
    }
  }
  $("sensor-close").addEventListener("click", () => { $("sensor-panel").hidden = true; $("map").focus(); });

  // --- KPI tiles -------------------------------------------------------------------------
  function renderScopes() {
    const select = $("scope");
    const options = [["city", "the whole city"], ...state.districts.map((d) => [d.id, d.name])];
    select.replaceChildren(...options.map(([id, name]) => el("option", { value: id, selected: id === state.scope, text: name })));
  }
  $("scope").addEventListener("change", (event) => setScope(event.target.value));

  function setScope(scope) {
    state.scope = scope;
    $("scope").value = scope;
    renderTiles(); renderMap();
  }

  function renderTiles() {
    const values = [...state.current.values()]
      .filter((v) => v.scope === state.scope)
      .filter((v) => inDomain((state.catalog.get(v.kpi_id) || {}).domain))
      .sort((a, b) => a.kpi_id.localeCompare(b.kpi_id))
      // On the wall, the rated KPIs first: the unrated ones shrink to a line after them.
      .sort((a, b) => (kiosk ? Number(a.rating === "insufficient_data") - Number(b.rating === "insufficient_data") : 0));
    const tiles = values.map((v) => {
      const kpi = state.catalog.get(v.kpi_id) || { name: v.kpi_id, domain: "" };
      const r = rating(v.rating);
      const unit = v.unit === "/" ? "" : v.unit;
      const base = v.baseline;
      let change = "no baseline recorded";
      if (base && base.change !== null && base.change !== undefined) {
        const pct = base.change_pct === null || base.change_pct === undefined ? "" : ` (${base.change_pct > 0 ? "+" : ""}${number(base.change_pct, 2)} %)`;
        change = `${base.change > 0 ? "better" : base.change < 0 ? "worse" : "unchanged"} since baseline${pct}`;
      }
      const history = state.series.get(`${v.kpi_id}|${v.scope}`);
      const coverage = v.coverage ? `${Math.round(100 * v.coverage.ratio)} % coverage (${v.coverage.sources_used}/${v.coverage.sources_expected} sources)` : "";
      return el("article", { class: `tile ${v.rating}`, "data-kpi": v.kpi_id, "aria-label": `${kpi.name}: ${v.value === null ? "no value" : number(v.value) + " " + unit}, ${r.label}` },
        el("header", {}, el("span", { class: "kpi-id", text: v.kpi_id }), el("span", { class: "domain", text: kpi.domain })),
        el("h3", { text: kpi.name }),
        el("p", { class: "value" }, v.value === null ? "–" : number(v.value), el("span", { class: "unit", text: unit })),
        el("p", { class: "rating" }, el("span", { class: "symbol", "aria-hidden": "true", text: r.symbol }), ` ${r.label}`),
        el("p", { class: "band", text: band(v) }),
        el("p", { class: "coverage", text: coverage }),
        el("p", { class: "change", text: change }),
        history ? sparkline(history, `${kpi.name}, last ${history.length} days: ${history.map((x) => number(x)).join(", ")}`) : el("p", { class: "muted spark-wait", text: "trend loading…" }),
      );
    });
    $("tiles").replaceChildren(...(tiles.length ? tiles : [el("p", { class: "muted", text: state.key ? "No KPI value for this scope yet (the monitor computes them every minute)." : "Connect with a key to see the KPIs." })]));
  }

  async function loadKpis() {
    const body = await api("/v1/kpis/current?period=day");
    state.current = new Map(body.values.map((v) => [`${v.kpi_id}|${v.scope}`, v]));
    const times = body.values.map((v) => v.computed_at).sort();
    state.computedAt = times.length ? new Date(times[times.length - 1]) : null;
    $("computed").textContent = state.computedAt ? `computed ${state.computedAt.toISOString().slice(11, 19)} UTC` : "";
    renderTiles();
  }

  // The last days of each KPI for the sparklines: one request per KPI (all scopes), two at a
  // time, after the first screen is up.
  async function loadSeries(generation) {
    const end = new Date();
    const start = new Date(end.getTime() - 7 * 86400 * 1000);
    const districts = state.districts.map((d) => `&district=${encodeURIComponent(d.id)}`).join("");
    const ids = [...new Set([...state.current.values()].map((v) => v.kpi_id))];
    const one = async (id) => {
      try {
        const body = await api(`/v1/kpis/${encodeURIComponent(id)}/series?start=${start.toISOString()}&end=${end.toISOString()}&grain=day${districts}`);
        const by = new Map();
        for (const v of body.values) {
          if (!by.has(v.scope)) by.set(v.scope, []);
          by.get(v.scope).push([v.period_start, v.value]);
        }
        for (const [scope, list] of by) {
          list.sort((a, b) => a[0].localeCompare(b[0]));
          state.series.set(`${id}|${scope}`, list.map((x) => x[1]));
        }
      } catch (error) { /* a KPI without a series keeps its "trend loading" note */ }
    };
    const queue = [...ids];
    const worker = async () => {
      while (queue.length && generation === state.generation) await one(queue.shift());
    };
    await Promise.all([worker(), worker()]);
    if (generation === state.generation) renderTiles();
  }

  // --- Live charts -----------------------------------------------------------------------
  function addReading(r) {
    state.seen.set(r.sensor_id, Date.now());
    if (CHARTED[r.domain] !== r.quantity) return;
    const minute = Math.floor(Date.parse(r.time) / 60000);
    const buckets = state.charts.get(r.domain);
    const bucket = buckets.get(minute) || { sum: 0, n: 0, unit: r.unit };
    bucket.sum += r.value; bucket.n += 1;
    buckets.set(minute, bucket);
    for (const m of buckets.keys()) if (m < minute - CHART_MINUTES * 4) buckets.delete(m);
  }

  function renderCharts() {
    const now = Math.floor(Date.now() / 60000);
    const W = 300; const H = 90;
    const charts = DOMAINS.filter(inDomain).map((domain) => {
      const buckets = state.charts.get(domain);
      const minutes = Array.from({ length: CHART_MINUTES }, (_, i) => now - CHART_MINUTES + 1 + i);
      const values = minutes.map((m) => (buckets.has(m) ? buckets.get(m).sum / buckets.get(m).n : null));
      const known = values.filter((v) => v !== null);
      const unitOf = [...buckets.values()].map((b) => b.unit).find(Boolean) || "";
      const unit = unitOf === "/" ? "" : unitOf;
      const latest = [...buckets.keys()].sort((a, b) => b - a)[0];
      const latestValue = latest === undefined ? null : buckets.get(latest).sum / buckets.get(latest).n;
      const summary = known.length
        ? `${CHARTED[domain]}: newest per-minute mean ${number(latestValue)} ${unit}, range ${number(Math.min(...known))} to ${number(Math.max(...known))} over ${CHART_MINUTES} min`
        : `${CHARTED[domain]}: waiting for readings from the stream`;
      const chart = sparkline(values, summary, W, H);
      chart.setAttribute("class", "chart");
      return el("figure", { class: "chart-box", "data-domain": domain },
        el("figcaption", {}, el("strong", { text: domain }), ` ${CHARTED[domain]}${unit ? ` (${unit})` : ""}`),
        chart,
        el("p", { class: "chart-text", text: summary }));
    });
    $("charts").replaceChildren(...charts);
  }

  // --- Alerts ----------------------------------------------------------------------------
  async function loadAlerts() {
    const body = await api("/v1/alerts?state=open&limit=100");
    state.alerts = body.items;
    renderAlerts();
  }

  function renderAlerts() {
    const shown = state.alerts.filter((a) => inDomain(a.domain));
    $("alert-count").textContent = `(${shown.length})`;
    const items = shown.map((a) => {
      const actions = [];
      if (can("alerts:write") && a.state === "raised") actions.push(el("button", { type: "button", "data-action": "acknowledge", "data-alert": a.id, text: "Acknowledge" }));
      if (can("alerts:write")) actions.push(el("button", { type: "button", "data-action": "clear", "data-alert": a.id, text: "Clear" }));
      return el("li", { class: `alert ${a.severity} ${a.state}`, "data-alert-id": a.id },
        el("span", { class: "severity", text: a.severity.toUpperCase() }),
        el("span", { class: "when", text: new Date(a.raised_at).toISOString().slice(5, 16).replace("T", " ") }),
        el("span", { class: "message", text: a.message }),
        el("span", { class: "state", text: a.state === "acknowledged" ? `acknowledged by ${a.acknowledged_by}${a.ack_comment ? `: “${a.ack_comment}”` : ""}` : "raised, not yet acknowledged" }),
        actions.length ? el("span", { class: "alert-actions" }, actions) : null);
    });
    $("alerts").replaceChildren(...(items.length ? items : [el("li", { class: "muted", text: "No open alert." })]));
  }

  let pending = null;
  $("alerts").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const alert = state.alerts.find((a) => String(a.id) === button.dataset.alert);
    if (!alert) return;
    pending = { id: alert.id, action: button.dataset.action, opener: button };
    const verb = pending.action === "acknowledge" ? "Acknowledge" : "Clear";
    $("action-title").textContent = `${verb} alert ${alert.id}`;
    $("action-alert").textContent = alert.message;
    $("action-ok").textContent = verb;
    $("action-comment").value = "";
    $("action-error").textContent = "";
    $("action-dialog").showModal();
    $("action-comment").focus();
  });
  $("action-cancel").addEventListener("click", () => $("action-dialog").close());
  $("action-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!pending) return;
    const comment = $("action-comment").value.trim();
    if (!comment) { $("action-error").textContent = "Say in a few words what is being done."; return; }
    try {
      await api(`/v1/alerts/${pending.id}/${pending.action}`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ comment }),
      });
      $("action-dialog").close();
      pending = null;
      await loadAlerts();
      renderMap();
    } catch (error) {
      $("action-error").textContent = `refused: ${error.message}`;
    }
  });

  // --- Gateways and quarantine -----------------------------------------------------------
  async function loadRegistry() {
    const [districts, gateways, sensors] = await Promise.all([all("/v1/districts"), all("/v1/gateways"), all("/v1/sensors")]);
    // Redrawn only when something changed: a redraw would take the keyboard focus off the map.
    const signature = JSON.stringify([districts, gateways.map((g) => [g.id, g.online, g.status]), sensors.map((s) => [s.id, s.status])]);
    state.districts = districts;
    state.gateways = gateways.filter((g) => g.status !== "retired");
    state.sensors = sensors.filter((s) => s.status !== "retired");
    renderGateways();
    if (signature === state.registrySignature) return;
    state.registrySignature = signature;
    renderScopes(); renderMap();
  }

  function renderGateways() {
    const shown = state.gateways;
    const online = shown.filter((g) => g.online).length;
    $("gateway-count").textContent = `(${online} of ${shown.length} online)`;
    const sorted = [...shown].sort((a, b) => Number(a.online) - Number(b.online) || a.id.localeCompare(b.id));
    $("gateways").replaceChildren(...sorted.map((g) => el("li", { class: `gw ${g.online ? "ok" : "offline"}` },
      el("span", { class: "dot", "aria-hidden": "true" }),
      el("span", { class: "gw-id", text: g.id }),
      el("span", { text: g.online ? "online" : "OFFLINE" }),
      el("span", { class: "muted", text: g.last_seen ? `seen ${ago(new Date(g.last_seen))}` : "never seen" }))));
  }

  async function loadQuarantine() {
    const since = new Date(Date.now() - 86400 * 1000).toISOString();
    const body = await api(`/v1/quarantine/summary?since=${encodeURIComponent(since)}`);
    $("quarantine-total").textContent = `(${body.total})`;
    $("quarantine").replaceChildren(...(body.reasons.length
      ? body.reasons.map((r) => el("li", {}, el("span", { class: "num", text: r.count }), ` ${r.reason.replaceAll("_", " ")}`))
      : [el("li", { class: "muted", text: "Nothing quarantined." })]));
  }

  // --- Stream ----------------------------------------------------------------------------
  function onEvent(type, data) {
    if (type === "readings") {
      state.lastReading = Date.now();
      for (const r of data.readings) addReading(r);
      scheduleRender();
    } else if (type === "kpi" && data.period === "day") {
      state.current.set(`${data.kpi_id}|${data.scope}`, data);
      state.computedAt = new Date();
      scheduleRender();
    } else if (type === "alert") {
      loadAlerts().then(renderMap).catch(() => {});
    } else if (type === "reset") {
      refresh();
    }
  }

  let renderQueued = false;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    setTimeout(() => { renderQueued = false; renderCharts(); renderTiles(); renderSeen(); }, 500);
  }

  // Sensors heard from on the stream get a ring: cheaper than redrawing the whole map.
  function renderSeen() {
    for (const node of document.querySelectorAll("#map circle.sensor")) {
      node.classList.toggle("reporting", state.seen.has(node.dataset.sensor));
    }
  }

  async function stream(generation) {
    let wait = 1000;
    while (generation === state.generation) {
      const controller = new AbortController();
      state.abort = controller;
      try {
        const headers = { "X-API-Key": state.key };
        if (state.lastEventId !== null) headers["Last-Event-ID"] = state.lastEventId;
        const response = await fetch("/v1/stream", { headers, signal: controller.signal });
        if (!response.ok) {
          const problem = await response.json().catch(() => ({}));
          throw new Error(problem.detail || `stream ${response.status}`);
        }
        state.connected = true; state.error = ""; state.lastByte = Date.now(); wait = 1000;
        freshness();
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          state.lastByte = Date.now();
          buffer += value.replaceAll("\r\n", "\n");
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end); buffer = buffer.slice(end + 2);
            let type = "message"; let data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("event:")) type = line.slice(6).trim();
              else if (line.startsWith("data:")) data += line.slice(5).trim();
              else if (line.startsWith("id:")) state.lastEventId = line.slice(3).trim();
            }
            if (data) onEvent(type, JSON.parse(data));
          }
        }
        state.error = "the stream ended";
      } catch (error) {
        if (controller.signal.aborted) return;
        state.error = error.message;
      }
      state.connected = false;
      freshness();
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = Math.min(wait * 2, 30000);
    }
  }

  // --- Wiring ----------------------------------------------------------------------------
  function renderAll() { renderTiles(); renderMap(); renderCharts(); renderAlerts(); }

  async function refresh() {
    await Promise.all([loadKpis(), loadAlerts(), loadRegistry(), loadQuarantine()]);
  }

  async function connect(key) {
    state.generation += 1;
    const generation = state.generation;
    if (state.abort) state.abort.abort();
    state.key = key;
    sessionStorage.setItem(KEY_ITEM, key);
    try {
      state.session = await api("/console/session");
      $("who").textContent = `${state.session.name} (${state.session.role})`;
      const catalog = await api("/v1/kpis");
      state.catalog = new Map(catalog.map((k) => [k.id, k]));
      await refresh();
      renderAll();
      stream(generation);
      loadSeries(generation);
    } catch (error) {
      state.error = error.message;
      $("who").textContent = `refused: ${error.message}`;
      if (error.status === 401) sessionStorage.removeItem(KEY_ITEM);
    }
    freshness();
  }

  function forget() {
    state.generation += 1;
    if (state.abort) state.abort.abort();
    sessionStorage.removeItem(KEY_ITEM);
    localStorage.removeItem(KEY_ITEM);
    Object.assign(state, {
      key: "", session: null, current: new Map(), series: new Map(), alerts: [], districts: [],
      gateways: [], sensors: [], lastEventId: null, connected: false, computedAt: null,
      registrySignature: "",
    });
    $("key").value = "";
    $("who").textContent = "key forgotten";
    $("computed").textContent = "";
    $("gateways").replaceChildren(); $("quarantine").replaceChildren();
    renderAll();
    freshness();
  }

  $("keyform").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key").value.trim();
    if (key) connect(key);
  });
  $("forget").addEventListener("click", forget);

  // Kiosk: no clicks needed; the scope turns through the city and each district.
  if (kiosk) {
    document.body.classList.add("kiosk");
    setInterval(() => {
      const scopes = ["city", ...state.districts.map((d) => d.id)];
      setScope(scopes[(scopes.indexOf(state.scope) + 1) % scopes.length]);
    }, KIOSK_ROTATE_S * 1000);
  }

  setInterval(freshness, 1000);
  setInterval(() => { if (state.key && state.connected) { renderCharts(); } }, 15000);
  setInterval(() => {
    if (!state.key) return;
    loadQuarantine().catch(() => {});
    loadRegistry().catch(() => {});
  }, 60000);

  // The previous live page kept the key in localStorage: do not leave it there.
  localStorage.removeItem(KEY_ITEM);
  renderDomains();
  renderAll();
  // `urbanpulse up` prints /console#key=...: the fragment never reaches the server or its logs.
  const fromFragment = new URLSearchParams(location.hash.slice(1)).get("key");
  if (fromFragment) history.replaceState(null, "", location.pathname + location.search);
  const saved = fromFragment || sessionStorage.getItem(KEY_ITEM);
  if (saved) { $("key").value = saved; connect(saved); } else freshness();
})();
