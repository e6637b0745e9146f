"use strict";
(() => {
  const REFRESH_MS = 3000;
  const PAGE_SIZE = 50;
  const SEARCH_DELAY_MS = 250;
  const CHART_HOURS = 72;
  const HOUR_MS = 3600000;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const integer = new Intl.NumberFormat("en-US");
  const decimal = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
  let selected = null;
  let busy = false;
  let again = false;
  // The page of regions shown: the regions after `after` in name order that contain `search`; the pages
  // before it are remembered for "previous".
  let search = "";
  let after = null;
  const before = [];
  let nextAfter = null;

  // Every text goes in as a text node or an attribute value, never as markup: region names, reasons and
  // rejected payloads are user data.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined) node.setAttribute(name, String(value));
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(child == null ? "" : String(child)));
    }
    return node;
  }
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }
  const byId = (id) => document.getElementById(id);
  const n0 = (v) => (v == null ? "—" : integer.format(v));
  const n1 = (v) => (v == null ? "—" : decimal.format(v));
  const hourText = (iso) => (iso ? iso.slice(0, 16).replace("T", " ") : "—");
  const timeText = (iso) => (iso ? iso.slice(0, 19).replace("T", " ") : "—");

  async function getJson(url) {
    const response = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
    const body = await response.json();
    if (!response.ok) {
      const error = new Error(body && body.error ? body.error : "HTTP " + response.status);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  function regionsUrl() {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (after !== null) query.set("after", after);
    if (search) query.set("search", search);
    return "/api/regions?" + query.toString();
  }

  // The selected region's summary: from the page when it is on it, else asked for by name (it may be on
  // another page, or gone: then nothing is selected).
  async function selectedRegion(overview) {
    const onPage = overview.regions.find((r) => r.region === selected);
    if (onPage || selected === null) return onPage || null;
    try {
      return await getJson("/api/regions/" + encodeURIComponent(selected));
    } catch (error) {
      if (error.status === 404) return null;
      throw error;
    }
  }

  function renderPage(page, shown) {
    const first = shown ? before.length * PAGE_SIZE + 1 : 0;
    let note = shown ? "regions " + n0(first) + "–" + n0(first + shown - 1) : "no region";
    note += page.search ? " of " + n0(page.matching) + " matching, " + n0(page.total) + " in all" : " of " + n0(page.total);
    byId("page-note").textContent = note;
    byId("page-prev").disabled = before.length === 0;
    byId("page-next").disabled = page.next_after === null;
    nextAfter = page.next_after;
  }

  function tile(key, label, value, sub, alert) {
    return el("div", { class: alert ? "tile alert" : "tile" },
      el("div", { class: "v", "data-metric": key }, value),
      el("div", { class: "k" }, label),
      sub ? el("div", { class: "sub" }, sub) : "");
  }

  function renderTiles(counts) {
    const tiles = [];
    for (const [topic, n] of Object.entries(counts.ingested)) {
      tiles.push(tile("ingested:" + topic, "ingested · " + topic, n0(n)));
    }
    tiles.push(tile("rows_written", "rows written", n0(counts.rows_written),
      "in " + n0(counts.batches_written) + (counts.batches_written === 1 ? " batch" : " batches")));
    tiles.push(tile("rows_emitted", "rows emitted", n0(counts.rows_emitted)));
    tiles.push(tile("dead_letters_total", "dead letters", n0(counts.dead_letters_total), null,
      counts.dead_letters_total > 0));
    tiles.push(tile("late", "late records", n0(counts.late)));
    const avg = counts.batches_written ? (1000 * counts.write_seconds_total) / counts.batches_written : null;
    tiles.push(tile("write_ms", "avg write batch", avg == null ? "—" : decimal.format(avg) + " ms",
      "last " + decimal.format(1000 * counts.write_seconds_last) + " ms"));
    tiles.push(tile("write_failures", "write failures", n0(counts.write_failures), null,
      counts.write_failures > 0));
    byId("tiles").replaceChildren(...tiles);
  }

  function renderRegions(regions) {
    const body = byId("regions-body");
    if (!regions.length) {
      const text = search ? "No region matches." : "No region has data on this worker yet.";
      body.replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "empty" }, text)));
      return;
    }
    body.replaceChildren(...regions.map((r) => {
      const row = el("tr", { class: r.region === selected ? "pick sel" : "pick", "data-region": r.region },
        el("td", { class: "name", "data-field": "region" }, r.region),
        el("td", { class: "when", "data-field": "watermark" }, hourText(r.watermark)),
        el("td", { class: "when", "data-field": "latest_complete" }, hourText(r.latest_complete)),
        el("td", { class: "num", "data-field": "hours_kept" }, n0(r.hours_kept)),
        el("td", { class: "num", "data-field": "complete_hours" }, n0(r.complete_hours)),
        el("td", { class: r.incomplete_count ? "num warn" : "num", "data-field": "incomplete_count" },
          n0(r.incomplete_count)),
        el("td", { class: "num", "data-field": "partition" }, r.partition));
      row.addEventListener("click", () => select(r.region));
      return row;
    }));
  }

  function renderIncomplete(region) {
    byId("incomplete-count").textContent = region ? n0(region.incomplete_count) : "—";
    const list = byId("incomplete");
    if (!region || !region.incomplete.length) {
      list.replaceChildren(el("li", { class: "muted" }, region ? "none: every kept hour has both halves" : ""));
      return;
    }
    list.replaceChildren(...region.incomplete.map((h) =>
      el("li", { "data-hour": h.hour }, el("span", {}, hourText(h.hour)), el("span", { class: "warn" }, h.missing + " missing"))));
  }

  function renderLag(lag) {
    const body = byId("lag-body");
    if (!lag.length) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: 5, class: "empty" }, "No partitions assigned.")));
      return;
    }
    body.replaceChildren(...lag.map((p) => el("tr", { "data-tp": p.topic + ":" + p.partition },
      el("td", { class: "topic" }, p.topic),
      el("td", { class: "num" }, p.partition),
      el("td", { class: "num" }, n0(p.highwater)),
      el("td", { class: "num" }, n0(p.committed)),
      el("td", { class: p.lag ? "num warn" : "num", "data-field": "lag" }, n0(p.lag)))));
  }

  function renderDeadLetters(answer) {
    byId("dl-note").textContent = "latest " + answer.dead_letters.length + " of " + n0(answer.kept) + " kept";
    const list = byId("dl-body");
    if (!answer.dead_letters.length) {
      list.replaceChildren(el("li", { class: "empty" }, "No rejected messages."));
      return;
    }
    list.replaceChildren(...answer.dead_letters.map((d) => el("li", {},
      el("div", { class: "reason" }, d.reason),
      el("div", { class: "meta" }, timeText(d.time) + " UTC · " + d.topic + " [" + d.partition + "] @" + d.offset +
        " · " + n0(d.value_size) + (d.value_size === 1 ? " byte" : " bytes")),
      el("code", { class: "val", title: d.value }, d.value))));
  }

  function niceCeil(value) {
    if (!(value > 0)) return 1;
    const base = Math.pow(10, Math.floor(Math.log10(value)));
    for (const step of [1, 2, 2.5, 5, 10]) if (value <= step * base) return step * base;
    return 10 * base;
  }

  function linePath(points) {
    let d = "";
    let open = false;
    for (const p of points) {
      if (p === null) { open = false; continue; }
      d += (open ? "L" : "M") + p[0].toFixed(1) + " " + p[1].toFixed(1);
      open = true;
    }
    return d;
  }

  function areaPaths(points, baseY) {
    const runs = [];
    let run = [];
    for (const p of points) {
      if (p === null) { if (run.length) runs.push(run); run = []; } else run.push(p);
    }
    if (run.length) runs.push(run);
    return runs.map((r) => "M" + r[0][0].toFixed(1) + " " + baseY + r.map((p) => "L" + p[0].toFixed(1) + " " + p[1].toFixed(1)).join("") +
      "L" + r[r.length - 1][0].toFixed(1) + " " + baseY + "Z");
  }

  function renderChart(region, answer) {
    const box = byId("chart");
    if (!region || !region.latest_complete || !answer) {
      box.replaceChildren(el("div", { class: "empty" }, "No complete hour yet."));
      return;
    }
    const end = Date.parse(region.latest_complete);
    const start = end - (CHART_HOURS - 1) * HOUR_MS;
    const byHour = new Map(answer.hours.map((h) => [Date.parse(h.hour), h]));
    const series = [];
    for (let i = 0; i < CHART_HOURS; i++) {
      const t = start + i * HOUR_MS;
      const h = byHour.get(t);
      series.push({
        t,
        production: h && h.solar ? h.solar.production_mw : null,
        average: h && h.feature && h.history_kept ? h.feature.production_ma_24h : null,
        radiation: h && h.weather ? h.weather.solar_radiation_wm2 : null,
      });
    }
    const W = 960, H = 310, left = 58, right = 58, top = 24, bottom = 40;
    const plotW = W - left - right, plotH = H - top - bottom;
    const finite = (key) => series.map((s) => s[key]).filter((v) => v !== null);
    const maxP = niceCeil(Math.max(0, ...finite("production"), ...finite("average")));
    const maxR = niceCeil(Math.max(0, ...finite("radiation")));
    const x = (i) => left + (plotW * i) / (CHART_HOURS - 1);
    const yP = (v) => top + plotH * (1 - v / maxP);
    const yR = (v) => top + plotH * (1 - v / maxR);
    const chart = svg("svg", { class: "chart", viewBox: "0 0 " + W + " " + H, role: "img",
      "aria-label": "production, 24 h moving average and solar radiation, last 72 hours" });
    const grid = svg("g", { stroke: "#e2e6eb", "stroke-width": 1 });
    const labels = svg("g", {});
    for (let k = 0; k <= 4; k++) {
      const y = top + (plotH * k) / 4;
      grid.append(svg("line", { x1: left, x2: W - right, y1: y, y2: y }));
      labels.append(svg("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, integer.format(maxP * (1 - k / 4))));
      labels.append(svg("text", { x: W - right + 6, y: y + 4, "text-anchor": "start" }, integer.format(maxR * (1 - k / 4))));
    }
    labels.append(svg("text", { x: left - 6, y: top - 8, "text-anchor": "end" }, "MW"));
    labels.append(svg("text", { x: W - right + 6, y: top - 8, "text-anchor": "start" }, "W/m²"));
    series.forEach((s, i) => {
      const d = new Date(s.t);
      if (d.getUTCHours() % 6 !== 0) return;
      const midnight = d.getUTCHours() === 0;
      grid.append(svg("line", { x1: x(i), x2: x(i), y1: top, y2: top + plotH, stroke: midnight ? "#c9d0d9" : "#eef1f4" }));
      labels.append(svg("text", { x: x(i), y: top + plotH + 15, "text-anchor": "middle" },
        String(d.getUTCHours()).padStart(2, "0") + ":00"));
      if (midnight) {
        labels.append(svg("text", { x: x(i), y: top + plotH + 29, "text-anchor": "middle" }, d.toISOString().slice(0, 10)));
      }
    });
    const rad = series.map((s, i) => (s.radiation === null ? null : [x(i), yR(s.radiation)]));
    const prod = series.map((s, i) => (s.production === null ? null : [x(i), yP(s.production)]));
    const avg = series.map((s, i) => (s.average === null ? null : [x(i), yP(s.average)]));
    chart.append(grid);
    for (const d of areaPaths(rad, top + plotH)) chart.append(svg("path", { d, fill: "#e69a1a", "fill-opacity": 0.13, stroke: "none" }));
    chart.append(svg("path", { class: "line-radiation", d: linePath(rad), fill: "none", stroke: "#e69a1a", "stroke-width": 1.5 }));
    chart.append(svg("path", { class: "line-average", d: linePath(avg), fill: "none", stroke: "#17202c", "stroke-width": 1.6, "stroke-dasharray": "5 3" }));
    chart.append(svg("path", { class: "line-production", d: linePath(prod), fill: "none", stroke: "#1d5fd1", "stroke-width": 2 }));
    const dots = svg("g", { fill: "#1d5fd1" });
    series.forEach((s, i) => {
      if (s.production === null) return;
      dots.append(svg("circle", { class: "pt", cx: x(i).toFixed(1), cy: yP(s.production).toFixed(1), r: 2.4 },
        svg("title", {}, new Date(s.t).toISOString().slice(0, 16).replace("T", " ") + " UTC\nproduction " + n1(s.production) +
          " MW\n24 h average " + n1(s.average) + " MW\nradiation " + n1(s.radiation) + " W/m²")));
    });
    chart.append(dots, labels);
    chart.append(svg("rect", { x: left, y: top, width: plotW, height: plotH, fill: "none", stroke: "#c9d0d9" }));
    box.replaceChildren(chart);
  }

  function select(region) {
    selected = region;
    history.replaceState(null, "", "#region=" + encodeURIComponent(region));
    refresh();
  }

  async function refresh() {
    if (busy) { again = true; return; }  // a click or a search while a refresh is out: once more after it
    busy = true;
    try {
      const [overview, dead] = await Promise.all([getJson(regionsUrl()), getJson("/api/deadletters?limit=20")]);
      let region = await selectedRegion(overview);
      if (region === null) {
        region = overview.regions.length ? overview.regions[0] : null;
        selected = region ? region.region : null;
      }
      let hours = null;
      if (region && region.latest_complete) {
        const end = Date.parse(region.latest_complete);
        const from = new Date(end - (CHART_HOURS - 1) * HOUR_MS).toISOString();
        hours = await getJson("/api/regions/" + encodeURIComponent(region.region) + "/hours?from=" +
          encodeURIComponent(from) + "&to=" + encodeURIComponent(region.latest_complete));
      }
      byId("worker").textContent = overview.worker.url + " · group " + overview.worker.group +
        " · partitions " + (overview.worker.partitions.join(", ") || "none") + " of " + overview.worker.partition_count;
      renderTiles(overview.counts);
      renderRegions(overview.regions);
      renderPage(overview.page, overview.regions.length);
      byId("region-title").textContent = region ? region.region : "—";
      byId("region-watermark").textContent = region ? "watermark " + hourText(region.watermark) : "";
      renderChart(region, hours);
      renderIncomplete(region);
      renderLag(overview.lag);
      renderDeadLetters(dead);
      byId("state").className = "dot live";
      byId("updated").textContent = "updated " + timeText(overview.generated_at) + " UTC";
      document.body.dataset.loaded = "1";
    } catch (error) {
      byId("state").className = "dot down";
      byId("updated").textContent = "no answer (" + error.message + "), retrying";
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }

  const fromHash = /^#region=(.*)$/.exec(location.hash);
  if (fromHash) {
    try { selected = decodeURIComponent(fromHash[1]); } catch (e) { selected = null; }
  }
  let typing = null;
  byId("region-search").addEventListener("input", (event) => {
    clearTimeout(typing);
    typing = setTimeout(() => {
      search = event.target.value.trim();
      after = null;
      before.length = 0;
      refresh();
    }, SEARCH_DELAY_MS);
  });
  byId("page-next").addEventListener("click", () => {
    if (nextAfter === null) return;
    before.push(after);
    after = nextAfter;
    refresh();
  });
  byId("page-prev").addEventListener("click", () => {
    if (!before.length) return;
    after = before.pop();
    refresh();
  });
  refresh();
  setInterval(refresh, REFRESH_MS);
})();
