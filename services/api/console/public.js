// The public city page: the KPIs of the city and its districts from /public/kpis (no key),
// with targets, coverage and trend; a value too thin to rate is said to be so, not shown.
"use strict";

(() => {
  const { el, number, rating, band } = UP;
  const $ = (id) => document.getElementById(id);
  const PERIODS = { day: "today", month: "this month", year: "this year" };

  function trendText(trend) {
    if (!trend) return "no baseline to compare with";
    const pct = trend.change_pct === null || trend.change_pct === undefined ? "" : ` (${trend.change_pct > 0 ? "+" : ""}${number(trend.change_pct, 2)} %)`;
    const since = trend.baseline_period_start ? ` since ${trend.baseline_period_start.slice(0, 10)}` : "";
    return `${trend.direction}${pct}${since}`;
  }

  function scopeSection(scope, kpis) {
    const name = (v) => (kpis.get(v.kpi_id) || { name: v.kpi_id }).name;
    const rated = scope.values.filter((v) => v.value !== null);
    const thin = scope.values.filter((v) => v.value === null);
    const rows = rated.map((v) => {
      const kpi = kpis.get(v.kpi_id) || { name: v.kpi_id, domain: "" };
      const r = rating(v.rating);
      const unit = v.unit === "/" ? "" : ` ${v.unit}`;
      return el("tr", { class: v.rating, "data-kpi": v.kpi_id },
        el("th", { scope: "row" }, kpi.name, el("br"), el("span", { class: "muted", text: `${kpi.domain} · ${v.kpi_id}` })),
        el("td", { class: "value", text: `${number(v.value)}${unit}` }),
        el("td", {}, el("span", { class: "r", "aria-hidden": "true", text: `${r.symbol} ` }), r.label),
        el("td", { text: band(v) }),
        el("td", { text: `${Math.round(100 * v.coverage.ratio)} % of expected data (${Math.round(100 * v.coverage.needed)} % needed)` }),
        el("td", { text: trendText(v.trend) }));
    });
    const section = el("section", { "data-scope": scope.id, "aria-labelledby": `scope-${scope.id}` },
      el("h2", { id: `scope-${scope.id}`, text: scope.name }));
    if (!rated.length) {
      section.append(el("p", { class: "thin", text: scope.values.length
        ? "Not enough data to rate this area on any indicator yet: too little of the expected data arrived."
        : "Not enough data to rate this area yet: no indicator has been computed for it." }));
    } else {
      section.append(el("table", {},
        el("thead", {}, el("tr", {}, ["Indicator", "Value", "Rating", "Target", "Coverage", "Trend"].map((h) => el("th", { scope: "col", text: h })))),
        el("tbody", {}, rows)));
    }
    if (thin.length) {
      section.append(el("p", { class: "thin", "data-thin": thin.length },
        `Not enough data to rate ${thin.length === scope.values.length ? "any" : `${thin.length} of ${scope.values.length}`} indicators here: `,
        thin.map((v) => `${name(v)} (${Math.round(100 * v.coverage.ratio)} % of the expected data, ${Math.round(100 * v.coverage.needed)} % needed)`).join("; "),
        "."));
    }
    if (scope.sensors) {
      const counts = Object.entries(scope.sensors).map(([domain, n]) => `${n} ${domain}`).join(", ");
      section.append(el("p", { class: "sensors", text: `Sensors in service: ${counts || "none"}` }));
    }
    return section;
  }

  async function load() {
    const period = $("period").value;
    try {
      const response = await fetch(`/public/kpis?period=${period}`);
      if (!response.ok) throw new Error(`${response.status}`);
      const body = await response.json();
      const kpis = new Map(body.kpis.map((k) => [k.id, k]));
      $("scopes").replaceChildren(...body.scopes.map((s) => scopeSection(s, kpis)));
      $("updated").textContent = body.computed_at ? `${PERIODS[period]}, computed ${body.computed_at.slice(0, 16).replace("T", " ")} UTC` : "no values computed yet";
    } catch (error) {
      $("updated").textContent = `could not load the indicators (${error.message}); retrying in a minute`;
    }
  }

  $("period").addEventListener("change", load);
  load();
  setInterval(load, 60000);
})();
