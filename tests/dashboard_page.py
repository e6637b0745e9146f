"""What the browser tests ask of the dashboard's page: JavaScript run in it through WebDriver."""

PAGE_STATE = """
const text = (node) => (node ? node.textContent : null);
const metrics = {};
for (const node of document.querySelectorAll("[data-metric]")) {
  metrics[node.dataset.metric] = node.textContent;
}
const regions = [...document.querySelectorAll("#regions-body tr[data-region]")].map((tr) => {
  const fields = { key: tr.dataset.region };
  for (const td of tr.querySelectorAll("[data-field]")) fields[td.dataset.field] = td.textContent;
  return fields;
});
const lag = [...document.querySelectorAll("#lag-body tr[data-tp]")].map((tr) =>
  [tr.dataset.tp, text(tr.querySelector("[data-field=lag]"))]);
return {
  metrics, regions, lag,
  title: text(document.getElementById("region-title")),
  circles: document.querySelectorAll("svg.chart circle.pt").length,
  average: document.querySelector("svg.chart path.line-average").getAttribute("d"),
  radiation: document.querySelector("svg.chart path.line-radiation").getAttribute("d"),
  incomplete: text(document.getElementById("incomplete-count")),
  deadValues: [...document.querySelectorAll("#dl-body code.val")].map((c) => c.textContent),
  images: document.querySelectorAll("img, image").length,
  scripts: document.scripts.length,
  pwned: window.pwned === undefined ? null : window.pwned,
};
"""

READY = """
return document.body.dataset.loaded === "1"
  && document.getElementById("region-title").textContent === arguments[0]
  && document.querySelectorAll("svg.chart circle.pt").length > 0;
"""

SEARCH = """
const input = document.getElementById("region-search");
input.value = arguments[0];
input.dispatchEvent(new Event("input"));
return true;
"""

LISTED = """
const rows = [...document.querySelectorAll("#regions-body tr[data-region]")].map((tr) => tr.dataset.region);
return JSON.stringify(rows) === JSON.stringify(arguments[0])
  && document.getElementById("page-note").textContent.includes("matching") === arguments[1];
"""

SELECT = """
for (const tr of document.querySelectorAll("#regions-body tr[data-region]")) {
  if (tr.dataset.region === arguments[0]) { tr.click(); return true; }
}
return false;
"""
