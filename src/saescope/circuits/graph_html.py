"""A pruned attribution graph as one self-contained, offline HTML page (``graph.html``).

Layers run bottom to top, token positions left to right (their tokens along the bottom); each kept node
is a circle (features blue, errors grey, embeddings green, logits orange) and each kept edge a line,
red for positive weights and blue for negative, width by |weight|. The page needs no network:
- **pan** by dragging, **zoom** with the wheel;
- **hover** a node to highlight its edges and dim the rest;
- **click** a node to pin it and read its card (kind, layer, position, feature id, activation,
  influence, its strongest incoming and outgoing edges); a feature's card links to its page in the app
  (``/features/<id>``) when the graph names a RUN (``feature_link``);
- **Escape** clears the pins;
- **Group pinned** makes the pinned nodes a supernode (a labelled box; Neuronpedia's ``qParams.supernodes``,
  ``[name, node ids…]``), and **save JSON** downloads the graph with its supernodes;
- in the app (``intervene_url``), **Re-run** scales the pinned features in the real model (0 ablates them)
  and shows the next-token probabilities before and after (``circuits.graph_intervene``).
The data are the Neuronpedia JSON (``graph_export``), embedded as JSON inside the page and never
evaluated as HTML (labels are set with ``textContent``).
"""

from __future__ import annotations

import json
from typing import Any

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Attribution graph</title>
<style>
body{margin:0;font:13px system-ui,sans-serif;display:flex;height:100vh}
#view{flex:1;cursor:grab;background:#fcfcfc}
#side{width:320px;overflow:auto;border-left:1px solid #ddd;padding:10px}
.node{stroke:#333;stroke-width:.5}.feature{fill:#4c72b0}.error{fill:#aaa}.embedding{fill:#55a868}.logit{fill:#dd8452}
.edge{stroke-opacity:.35;pointer-events:none}.token{pointer-events:none}.dim{opacity:.08}.hot{stroke-opacity:1!important;opacity:1!important}
.pinned{stroke:#000;stroke-width:2}.token{font-size:11px;fill:#333}
.supernode{fill:#f2c14e;fill-opacity:.12;stroke:#b8860b;stroke-dasharray:4 3;pointer-events:none}
.supernode-label{font-size:11px;fill:#8a6508;pointer-events:none}.context b{background:#fde68a}
h2{font-size:15px;margin:4px 0}table{border-collapse:collapse}td{padding:1px 6px}
</style></head><body>
<svg id="view"><g id="world"><g id="groups"></g><g id="edges"></g><g id="nodes"></g><g id="labels"></g></g></svg>
<div id="side"><h2 id="title"></h2><div id="scores"></div>
<div id="intervene" hidden><p>Scale the pinned features by <input id="scale" type="number" value="0" step="0.5" style="width:4em">
<button id="intervene-run">Re-run</button> (0 ablates them)</p><div id="intervene-result"></div></div>
<p>Supernode: <input id="group-name" value="group" size="10"> <button id="group">Group pinned</button>
<a id="download" download="graph.json" href="#">save JSON</a></p><ul id="groups-list"></ul>
<div id="card">Hover a node; click to pin it.</div></div>
<script id="graph-data" type="application/json">__DATA__</script>
<script>
const G = JSON.parse(document.getElementById('graph-data').textContent);
const SVG = 'http://www.w3.org/2000/svg', STEP = 12, PER_ROW = 10, R = 5;
const nodes = G.nodes, byId = new Map(nodes.map(n => [n.node_id, n]));
const nLayers = Math.max(...nodes.filter(n => n.layer !== 'E').map(n => +n.layer));
const level = n => n.layer === 'E' ? 0 : +n.layer + 1;
const cells = new Map();  // one cell per (level, position), its nodes in a grid: nothing overlaps
for (const n of nodes) { const k = level(n) + ':' + n.ctx_idx; if (!cells.has(k)) cells.set(k, []); cells.get(k).push(n); }
const rows = Array(nLayers + 2).fill(1);
for (const [k, list] of cells) { const l = +k.split(':')[0]; rows[l] = Math.max(rows[l], Math.ceil(list.length / PER_ROW)); }
const rowTop = []; let y = 30; for (let l = rows.length - 1; l >= 0; l--) { rowTop[l] = y; y += rows[l] * STEP + 16; }
for (const [k, list] of cells) { const [l, pos] = k.split(':').map(Number);
  list.forEach((n, i) => { n.x = 30 + pos * (PER_ROW + 2) * STEP + (i % PER_ROW) * STEP;
    n.y = rowTop[l] + Math.floor(i / PER_ROW) * STEP; }); }
document.getElementById('title').textContent = G.metadata.prompt;
const info = G.metadata.info || {};
document.getElementById('scores').textContent = ['replacement_score', 'completeness_score']
  .filter(k => k in info).map(k => k.replace('_', ' ') + ' ' + (+info[k]).toFixed(3)).join(' · ');
const maxW = Math.max(1e-9, ...G.links.map(l => Math.abs(l.weight)));
const edgesOf = new Map(nodes.map(n => [n.node_id, []]));
const edgeLayer = document.getElementById('edges');
for (const l of G.links) { const s = byId.get(l.source), t = byId.get(l.target); if (!s || !t) continue;
  const e = document.createElementNS(SVG, 'line'); e.setAttribute('x1', s.x); e.setAttribute('y1', s.y);
  e.setAttribute('x2', t.x); e.setAttribute('y2', t.y); e.setAttribute('class', 'edge');
  e.setAttribute('stroke', l.weight > 0 ? '#c44e52' : '#4c72b0');
  e.setAttribute('stroke-width', 0.3 + 3 * Math.abs(l.weight) / maxW); edgeLayer.appendChild(e);
  e.link = l; edgesOf.get(s.node_id).push(e); edgesOf.get(t.node_id).push(e); }
const nodeLayer = document.getElementById('nodes'); const kind = {'cross layer transcoder': 'feature',
  'mlp reconstruction error': 'error', 'embedding': 'embedding', 'logit': 'logit'};
for (const n of nodes) { const c = document.createElementNS(SVG, 'circle'); c.setAttribute('cx', n.x);
  c.setAttribute('cy', n.y); c.setAttribute('r', R); c.setAttribute('class', 'node ' + kind[n.feature_type]);
  c.dataset.id = n.node_id; n.el = c; nodeLayer.appendChild(c); }
const labels = document.getElementById('labels');
for (const n of nodes.filter(n => n.layer === 'E' || n.feature_type === 'logit')) {
  const t = document.createElementNS(SVG, 'text'); t.setAttribute('x', n.x - 4);
  t.setAttribute('y', n.feature_type === 'logit' ? n.y - 8 : n.y + 16); t.setAttribute('class', 'token');
  t.textContent = n.feature_type === 'logit' ? n.clerp.replace('Output ', '') : n.clerp; labels.appendChild(t); }
let pinned = new Set();
function highlight(ids) { const on = ids.size > 0;
  for (const n of nodes) n.el.classList.toggle('dim', on && !ids.has(n.node_id));
  for (const e of edgeLayer.children) { const hot = on && (ids.has(e.link.source) || ids.has(e.link.target));
    e.classList.toggle('hot', hot); e.classList.toggle('dim', on && !hot);
    if (hot) { byId.get(e.link.source).el.classList.remove('dim'); byId.get(e.link.target).el.classList.remove('dim'); } } }
function row(table, a, b) { const tr = table.insertRow(); tr.insertCell().textContent = a; tr.insertCell().textContent = b; }
function card(n) { const box = document.getElementById('card'); box.replaceChildren();
  const h = document.createElement('h2'); box.appendChild(h);
  h.textContent = n.feature_type === 'logit' ? n.clerp : n.feature_type;
  const t = document.createElement('table'); box.appendChild(t);
  row(t, 'node', n.node_id); row(t, 'layer', n.layer); row(t, 'position', n.ctx_idx);
  if (n.feature_type === 'cross layer transcoder') { const f = n.node_id.split('_')[1]; row(t, 'feature', f);
    const link = (G.feature_links || {})[n.layer] || G.feature_link;
    if (link) { const a = document.createElement('a'); a.href = link.replace('{layer}', n.layer)
      .replace('{feature}', f); a.textContent = 'feature page'; a.id = 'feature-link'; box.appendChild(a); }
    const api = (G.feature_api || {})[n.layer];
    if (api) details(box, api.replace('{feature}', f)); }
  if (n.activation != null) row(t, 'activation', (+n.activation).toFixed(3));
  if (n.influence != null) row(t, 'influence', (+n.influence).toExponential(2));
  const edges = edgesOf.get(n.node_id).map(e => e.link).sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight)).slice(0, 12);
  const list = document.createElement('table'); list.id = 'card-edges'; box.appendChild(list);
  for (const l of edges) row(list, (l.target === n.node_id ? '← ' + l.source : '→ ' + l.target), l.weight.toFixed(3)); }
async function details(box, url) {  // the RUN's explanation, top tokens and contexts of a feature (the app)
  const div = document.createElement('div'); div.id = 'feature-details'; div.textContent = 'loading…'; box.appendChild(div);
  const response = await fetch(url); if (!response.ok) { div.textContent = 'no feature details'; return; }
  const d = await response.json(); div.replaceChildren();
  const p = document.createElement('p'); p.id = 'feature-explanation'; div.appendChild(p);
  p.textContent = d.explanation_label ? 'Explanation: ' + d.explanation_label : 'No explanation yet.';
  const tops = document.createElement('p'); tops.textContent = 'Top tokens: ' + d.top_tokens.slice(0, 8)
    .map(t => JSON.stringify(t.token)).join(' '); div.appendChild(tops);
  for (const ex of d.examples.slice(0, 3)) { const c = document.createElement('p'); c.className = 'context';
    ex.context_tokens.forEach((tok, i) => { const s = document.createElement(i === ex.center ? 'b' : 'span');
      s.textContent = tok; c.appendChild(s); }); div.appendChild(c); } }
const supernodes = (G.qParams && G.qParams.supernodes) || []; G.qParams = {...(G.qParams || {}), supernodes};
function drawGroups() { const layer = document.getElementById('groups'), list = document.getElementById('groups-list');
  layer.replaceChildren(); list.replaceChildren();
  for (const [name, ...ids] of supernodes) { const members = ids.map(id => byId.get(id)).filter(Boolean);
    if (!members.length) continue;
    const xs = members.map(m => m.x), ys = members.map(m => m.y), pad = 9;
    const r = document.createElementNS(SVG, 'rect'); r.setAttribute('class', 'supernode');
    r.setAttribute('x', Math.min(...xs) - pad); r.setAttribute('y', Math.min(...ys) - pad);
    r.setAttribute('width', Math.max(...xs) - Math.min(...xs) + 2 * pad);
    r.setAttribute('height', Math.max(...ys) - Math.min(...ys) + 2 * pad); r.setAttribute('rx', 6); layer.appendChild(r);
    const t = document.createElementNS(SVG, 'text'); t.setAttribute('class', 'supernode-label');
    t.setAttribute('x', Math.min(...xs) - pad); t.setAttribute('y', Math.min(...ys) - pad - 2); t.textContent = name;
    layer.appendChild(t);
    const li = document.createElement('li'); li.textContent = name + ' (' + members.length + ' nodes)'; list.appendChild(li); }
  const plain = {...G, nodes: nodes.map(({el, x, y, ...rest}) => rest)};
  document.getElementById('download').href = URL.createObjectURL(new Blob([JSON.stringify(plain)], {type: 'application/json'})); }
document.getElementById('group').addEventListener('click', () => { if (pinned.size < 2) return;
  supernodes.push([document.getElementById('group-name').value || 'group', ...pinned]); drawGroups(); });
nodeLayer.addEventListener('mouseover', ev => { const id = ev.target.dataset.id; if (!id) return;
  highlight(new Set([...pinned, id])); if (!pinned.size) card(byId.get(id)); });
nodeLayer.addEventListener('mouseout', () => highlight(pinned));
nodeLayer.addEventListener('click', ev => { const id = ev.target.dataset.id; if (!id) return;
  if (pinned.has(id)) pinned.delete(id); else pinned.add(id);
  ev.target.classList.toggle('pinned', pinned.has(id)); card(byId.get(id)); highlight(pinned); });
document.addEventListener('keydown', ev => { if (ev.key === 'Escape') { pinned = new Set();
  for (const n of nodes) n.el.classList.remove('pinned'); highlight(pinned); } });
const view = document.getElementById('view'), world = document.getElementById('world');
let zoom = 1, pan = [0, 0], drag = null;
const apply = () => world.setAttribute('transform', `translate(${pan[0]},${pan[1]}) scale(${zoom})`);
view.addEventListener('wheel', ev => { ev.preventDefault(); const f = ev.deltaY < 0 ? 1.15 : 1 / 1.15;
  pan = [ev.offsetX - (ev.offsetX - pan[0]) * f, ev.offsetY - (ev.offsetY - pan[1]) * f]; zoom *= f; apply(); });
view.addEventListener('mousedown', ev => { if (!ev.target.dataset.id) drag = [ev.clientX - pan[0], ev.clientY - pan[1]]; });
window.addEventListener('mousemove', ev => { if (drag) { pan = [ev.clientX - drag[0], ev.clientY - drag[1]]; apply(); } });
window.addEventListener('mouseup', () => { drag = null; });
let lastResult = null;
if (G.intervene_url) { document.getElementById('intervene').hidden = false;
  document.getElementById('intervene-run').addEventListener('click', async () => {
    const out = document.getElementById('intervene-result'); out.replaceChildren();
    const ids = [...pinned].filter(id => byId.get(id).feature_type === 'cross layer transcoder');
    if (!ids.length) { out.textContent = 'Pin at least one feature node first.'; return; }
    out.textContent = 'running…';
    const response = await fetch(G.intervene_url, {method: 'POST', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({nodes: ids, scale: +document.getElementById('scale').value})});
    const data = await response.json(); out.replaceChildren();
    if (!response.ok) { const d = data.detail; out.textContent = 'error: ' + (typeof d === 'string' ? d : JSON.stringify(d));
      return; }
    lastResult = data; const t = document.createElement('table'); t.id = 'intervene-table'; out.appendChild(t);
    const head = t.insertRow(); for (const h of ['token', 'before', 'after']) head.insertCell().textContent = h;
    const seen = new Set();
    for (const w of [...data.watch, ...data.after]) { if (seen.has(w.id)) continue; seen.add(w.id);
      const before = w.before ?? (data.before.find(b => b.id === w.id) || {}).prob;
      const after = w.after ?? w.prob; const tr = t.insertRow(); tr.insertCell().textContent = JSON.stringify(w.token);
      tr.insertCell().textContent = before == null ? '' : before.toFixed(3);
      tr.insertCell().textContent = after.toFixed(3); } }); }
drawGroups();
window.graphView = {zoom: () => zoom, pinned: () => [...pinned], lastResult: () => lastResult,
  supernodes: () => supernodes.map(s => [...s])};
</script></body></html>
"""


def graph_html(exported: dict[str, Any], feature_link: str | None = None, feature_links: dict[str, str] | None = None,
               intervene_url: str | None = None, feature_api: dict[str, str] | None = None) -> str:
    """The page for a graph in Neuronpedia's JSON (``graph_export.neuronpedia_json``).

    ``feature_link``: a URL template with ``{layer}`` and ``{feature}`` for the feature cards' links;
    ``feature_links``: one template per layer (the app: a RUN per transcoder layer), which wins.
    ``intervene_url``: the app's endpoint that scales the pinned features in the model and answers the
    next-token probabilities before and after; the page then shows a "Re-run" form (absent offline).
    ``feature_api``: per layer, the app's feature JSON URL template; a feature's card then shows the RUN's
    explanation, top tokens and top contexts."""
    data = {**exported, "feature_link": feature_link, "feature_links": feature_links or {},
            "intervene_url": intervene_url, "feature_api": feature_api or {}}
    text = json.dumps(data).replace("</", "<\\/")  # never closes the script element early
    return _PAGE.replace("__DATA__", text)
