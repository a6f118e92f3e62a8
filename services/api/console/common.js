// Helpers shared by the console and the public page. Plain JS, no dependency: the pages run
// under a Content-Security-Policy that allows this origin's files only.
"use strict";

const UP = (() => {
  const SVG = "http://www.w3.org/2000/svg";

  // An element with attributes and children; text goes in as text, never as HTML.
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs = {}, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value !== null && value !== undefined) node.setAttribute(name, String(value));
    }
    for (const child of children.flat()) {
      if (child !== null && child !== undefined) node.append(child);
    }
    return node;
  }

  function number(value, digits = 3) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    const abs = Math.abs(value);
    if (abs !== 0 && (abs >= 1e6 || abs < 1e-3)) return value.toExponential(2);
    if (abs >= 1000) return Math.round(value).toLocaleString("en");
    return Number(value.toPrecision(digits)).toString();
  }

  // Colour is never the only carrier: each rating has a word and a symbol too.
  const RATINGS = {
    met: { label: "met", symbol: "✓" },
    warning: { label: "warning", symbol: "!" },
    missed: { label: "missed", symbol: "✗" },
    insufficient_data: { label: "not enough data", symbol: "?" },
  };

  function rating(name) {
    return RATINGS[name] || { label: String(name), symbol: "?" };
  }

  function band(value) {
    const op = value.better === "lower" ? "≤" : "≥";
    const unit = value.unit && value.unit !== "/" ? ` ${value.unit}` : "";
    return `target ${op} ${number(value.target)}${unit}, warning ${op} ${number(value.warning)}${unit}`;
  }

  // A sparkline: a small line chart of numbers (nulls leave gaps), with a text alternative.
  function sparkline(values, label, width = 120, height = 28) {
    const known = values.filter((v) => v !== null && v !== undefined);
    const chart = svg("svg", {
      class: "spark", viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label,
      preserveAspectRatio: "none",
    });
    chart.append(svg("title", {}, label));
    if (known.length < 2) return chart;
    const low = Math.min(...known);
    const high = Math.max(...known);
    const span = high - low || 1;
    const step = width / Math.max(values.length - 1, 1);
    let path = "";
    let pen = false;
    values.forEach((v, i) => {
      if (v === null || v === undefined) { pen = false; return; }
      const x = (i * step).toFixed(1);
      const y = (height - 2 - ((v - low) / span) * (height - 4)).toFixed(1);
      path += `${pen ? "L" : "M"}${x},${y} `;
      pen = true;
    });
    chart.append(svg("path", { d: path.trim(), class: "spark-line" }));
    return chart;
  }

  function ago(date, now = Date.now()) {
    const seconds = Math.max(0, Math.round((now - date.getTime()) / 1000));
    if (seconds < 90) return `${seconds} s ago`;
    if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
    if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
    return `${Math.round(seconds / 86400)} days ago`;
  }

  return { el, svg, number, rating, band, sparkline, ago };
})();
