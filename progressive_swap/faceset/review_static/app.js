// swap-faceset review: a virtualised grid of a face set's thumbnails, and a mask painter.
// Plain browser JavaScript, no libraries, nothing fetched from outside this server.
"use strict";

const TOKEN = document.querySelector('meta[name="review-token"]').content;
const $ = (id) => document.getElementById(id);
const CELL = 132; // px per grid cell (128 px thumbnails + padding)

const S = {
  info: null, ids: [], scores: [], key: "index", selected: new Set(), anchor: -1, version: "",
  overlay: "", cells: new Map(), firstPaintMs: null, busy: false,
};
window.review = S; // for tests and the curious

function status(msg, err) {
  const el = $("status");
  el.textContent = msg || "";
  el.className = err ? "err" : "";
}

async function api(method, path, body, headers) {
  const h = Object.assign({ "X-Review-Token": TOKEN }, headers || {});
  let init = { method, headers: h };
  if (body !== undefined) {
    if (body instanceof ArrayBuffer || ArrayBuffer.isView(body)) init.body = body;
    else { init.body = JSON.stringify(body); h["Content-Type"] = "application/json"; }
  }
  let r;
  try { r = await fetch(path, init); } catch (e) {
    throw new Error("the review server does not answer (stopped?); nothing was changed by this request");
  }
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
    const err = new Error(msg); err.status = r.status; throw err;
  }
  return r;
}

// ---------------------------------------------------------------- the grid

async function loadInfo() {
  S.info = await (await api("GET", "/api/info")).json();
  $("title").textContent = S.info.path;
  const sort = $("sort"), keep = sort.value || "index";
  sort.innerHTML = "";
  for (const k of S.info.sort_keys) sort.add(new Option(k === "index" ? "set order" : k, k));
  sort.value = S.info.sort_keys.includes(keep) ? keep : "index";
  const ov = $("overlay"), keepOv = ov.value;
  ov.innerHTML = '<option value="">none</option>';
  for (const k of S.info.mask_kinds) ov.add(new Option(k, k));
  ov.value = S.info.mask_kinds.includes(keepOv) ? keepOv : "";
  const b = $("banner");
  if (S.info.problems.length) {
    b.textContent = "This face set has problems (faces stay as they are; check with swap-faceset info --deep): "
      + S.info.problems.join("; ");
    b.hidden = false;
  } else b.hidden = true;
  $("undo").disabled = !S.info.undo;
}

async function loadFaces() {
  const key = $("sort").value || "index", order = $("order").value;
  status("sorting by " + key + (key === "blur" ? " (decodes every image once)" : "") + "…");
  const d = await (await api("GET", `/api/faces?sort=${encodeURIComponent(key)}` + (order ? `&order=${order}` : ""))).json();
  S.ids = d.ids; S.scores = d.scores; S.key = d.key; S.version = d.version;
  const live = new Set(S.ids);
  for (const id of [...S.selected]) if (!live.has(id)) S.selected.delete(id);
  $("count").textContent = S.ids.length + " faces";
  for (const c of S.cells.values()) c.remove();
  S.cells.clear();
  layout();
  render();
  status(`${S.ids.length} faces, ${key === "index" ? "in the set's order" : "by " + key + (d.descending ? " (descending)" : "")}`);
  document.body.dataset.version = S.version;
}

function layout() {
  const g = $("grid");
  S.cols = Math.max(1, Math.floor(g.clientWidth / CELL));
  $("spacer").style.height = Math.ceil(S.ids.length / S.cols) * CELL + "px";
}

function thumbUrl(id) {
  return "/thumb/" + encodeURIComponent(id) + "?v=" + S.version + (S.overlay ? "&overlay=" + S.overlay : "");
}

function render() {
  const g = $("grid"), sp = $("spacer");
  const first = Math.max(0, Math.floor(g.scrollTop / CELL) - 2);
  const last = Math.min(Math.ceil(S.ids.length / S.cols), Math.ceil((g.scrollTop + g.clientHeight) / CELL) + 2);
  const want = new Set();
  for (let r = first; r < last; r++) {
    for (let c = 0; c < S.cols; c++) {
      const k = r * S.cols + c;
      if (k >= S.ids.length) break;
      want.add(k);
      let el = S.cells.get(k);
      const id = S.ids[k];
      if (!el) {
        el = document.createElement("div");
        el.className = "cell";
        el.style.left = c * CELL + "px"; el.style.top = r * CELL + "px";
        el.style.width = el.style.height = CELL + "px";
        const img = document.createElement("img");
        img.decoding = "async"; img.loading = "eager"; img.alt = id;
        img.onerror = () => { el.classList.add("bad"); el.title = id + ": not in the set any more, or its image is missing"; };
        el.appendChild(img);
        const lab = document.createElement("span");
        lab.className = "lab";
        el.appendChild(lab);
        sp.appendChild(el);
        S.cells.set(k, el);
      }
      if (el.dataset.id !== id || el.dataset.src !== thumbUrl(id)) {
        el.dataset.id = id; el.dataset.k = k; el.dataset.src = thumbUrl(id);
        el.classList.remove("bad");
        el.firstChild.src = thumbUrl(id);
        const sc = S.scores[k];
        el.lastChild.textContent = id + (S.key !== "index" && sc !== null ? " · " + sc : "");
        el.title = id;
      }
      el.classList.toggle("sel", S.selected.has(id));
    }
  }
  for (const [k, el] of S.cells) if (!want.has(k)) { el.remove(); S.cells.delete(k); }
  if (S.firstPaintMs === null && S.ids.length) whenImagesLoaded().then(() => {
    S.firstPaintMs = performance.now(); document.body.dataset.ready = "1";
  });
  if (!S.ids.length) document.body.dataset.ready = "1";
}

function whenImagesLoaded() {
  const imgs = [...document.querySelectorAll(".cell img")];
  return Promise.all(imgs.map((i) => i.complete ? null : new Promise((ok) => { i.onload = ok; i.addEventListener("error", ok); })));
}

function updateSelection() {
  for (const el of S.cells.values()) el.classList.toggle("sel", S.selected.has(el.dataset.id));
  $("selcount").textContent = S.selected.size + " selected";
}

$("grid").addEventListener("scroll", () => requestAnimationFrame(render), { passive: true });
window.addEventListener("resize", () => { for (const c of S.cells.values()) c.remove(); S.cells.clear(); layout(); render(); });
$("grid").addEventListener("click", (ev) => {
  const el = ev.target.closest(".cell"); if (!el) return;
  const k = +el.dataset.k, id = el.dataset.id;
  if (ev.shiftKey && S.anchor >= 0) {
    const [a, b] = [Math.min(S.anchor, k), Math.max(S.anchor, k)];
    for (let i = a; i <= b; i++) S.selected.add(S.ids[i]);
  } else if (ev.ctrlKey || ev.metaKey) {
    S.selected.has(id) ? S.selected.delete(id) : S.selected.add(id);
    S.anchor = k;
  } else {
    const only = S.selected.size === 1 && S.selected.has(id);
    S.selected.clear(); if (!only) S.selected.add(id);
    S.anchor = k;
  }
  updateSelection();
});
$("grid").addEventListener("dblclick", (ev) => {
  const el = ev.target.closest(".cell"); if (el) openEditor(el.dataset.id);
});
$("sort").addEventListener("change", () => run(loadFaces));
$("order").addEventListener("change", () => run(loadFaces));
$("overlay").addEventListener("change", () => { S.overlay = $("overlay").value; render(); });

async function run(fn) {
  if (S.busy) return;
  S.busy = true; document.body.dataset.busy = "1";
  try { await fn(); } catch (e) { status(e.message, true); }
  finally { S.busy = false; document.body.dataset.busy = ""; }
}

async function refresh() { await loadInfo(); await loadFaces(); }

$("remove").addEventListener("click", () => run(async () => {
  const ids = [...S.selected];
  if (!ids.length) throw new Error("select faces first (click, Ctrl+click, Shift+click)");
  const d = await (await api("POST", "/api/remove", { ids })).json();
  S.selected.clear();
  await refresh();
  status(`removed ${d.moved} face(s) to ${d.to} (Undo brings them back)`);
}));
$("move").addEventListener("click", () => run(async () => {
  const ids = [...S.selected];
  if (!ids.length) throw new Error("select faces first");
  const d = await (await api("POST", "/api/move", { ids, dest: $("dest").value })).json();
  S.selected.clear();
  await refresh();
  status(`moved ${d.moved} face(s) to ${d.to} (Undo brings them back)`);
}));
$("undo").addEventListener("click", () => run(async () => {
  const d = await (await api("POST", "/api/undo", {})).json();
  S.selected = new Set(d.ids);
  await refresh();
  updateSelection();
  status(`restored ${d.restored} face(s): ${d.ids.join(", ")}` + (d.removed ? ` (removed ${d.removed}, now empty)` : ""));
}));
$("edit").addEventListener("click", () => {
  if (S.selected.size !== 1) { status("select exactly one face to edit its mask", true); return; }
  openEditor([...S.selected][0]);
});
document.addEventListener("keydown", (ev) => {
  if (!$("editor").hidden || ev.target.tagName === "INPUT") return;
  if (ev.key === "Delete" || ev.key === "Backspace") $("remove").click();
  else if ((ev.ctrlKey || ev.metaKey) && ev.key === "z") $("undo").click();
});

// The set may change under the page (another tab, a CLI command): follow it.
setInterval(async () => {
  if (S.busy || !$("editor").hidden) return;
  try {
    const v = (await (await api("GET", "/api/version")).json()).version;
    if (v !== S.version) { await refresh(); status("the face set changed on disk; the grid was reloaded"); }
  } catch (e) { status(e.message, true); }
}, 3000);

// ---------------------------------------------------------------- the mask editor

const E = { id: null, size: 0, mask: null, version: null, dirty: false, painting: false, last: null, scale: 1 };
window.reviewEditor = E;

async function openEditor(id) {
  const kinds = S.info.mask_kinds.length ? S.info.mask_kinds : ["occlusion"];
  const sel = $("ekind");
  sel.innerHTML = "";
  for (const k of kinds) sel.add(new Option(k, k));
  if (S.overlay) sel.value = S.overlay;
  E.id = id;
  $("eid").textContent = id;
  $("editor").hidden = false;
  await loadMask();
}

async function loadMask() {
  const id = E.id, kind = $("ekind").value;
  estatus("loading…");
  try {
    const img = new Image();
    const loaded = new Promise((ok, bad) => { img.onload = ok; img.onerror = () => bad(new Error("the image of " + id + " is missing")); });
    img.src = "/image/" + encodeURIComponent(id) + "?v=" + Date.now();
    const r = await api("GET", `/api/mask/${encodeURIComponent(id)}?kind=${kind}`);
    const raw = new Uint16Array(await r.arrayBuffer());
    await loaded;
    const n = img.naturalWidth;
    E.size = n; E.mask = new Float32Array(n * n);
    for (let i = 0; i < raw.length; i++) E.mask[i] = raw[i] / 65535;
    E.version = r.headers.get("X-Mask-Version"); E.dirty = false;
    for (const c of [$("eimg"), $("emask"), $("epoly")]) { c.width = n; c.height = n; }
    $("eimg").getContext("2d").drawImage(img, 0, 0);
    E.overlay = $("emask").getContext("2d").createImageData(n, n);
    fit();
    drawMask(0, 0, n, n);
    const polys = (await (await api("GET", `/api/polygons/${encodeURIComponent(id)}`)).json()).polygons;
    drawPolygons(polys);
    const src = r.headers.get("X-Mask-Source");
    estatus(src === "none" ? `no ${kind} mask yet: paint one` : `editing ${src} (saves as user_${kind}, ${n}x${n}, 16-bit)`);
  } catch (e) { estatus(e.message, true); }
}

// Hand-drawn polygons from the face's record (imported XSeg polygons): includes green, excludes red.
function drawPolygons(polys) {
  const g = $("epoly").getContext("2d");
  g.clearRect(0, 0, E.size, E.size);
  g.lineWidth = Math.max(1, E.size / 256);
  for (const p of polys) {
    if (p.points.length < 2) continue;
    g.strokeStyle = p.type === "include" ? "#3c3" : "#f33";
    g.beginPath();
    g.moveTo(p.points[0][0] + 0.5, p.points[0][1] + 0.5);
    for (const [x, y] of p.points.slice(1)) g.lineTo(x + 0.5, y + 0.5);
    g.closePath();
    g.stroke();
  }
}

function fit() {
  const st = $("estage"), n = E.size;
  E.scale = Math.min(st.clientWidth / n, st.clientHeight / n);
  for (const c of [$("eimg"), $("emask"), $("epoly")]) {
    c.style.width = c.style.height = n * E.scale + "px";
    c.style.left = (st.clientWidth - n * E.scale) / 2 + "px";
  }
}

function estatus(msg, err) { const el = $("estatus"); el.textContent = msg; el.className = err ? "err" : ""; }

function drawMask(x0, y0, x1, y1) {
  const n = E.size, d = E.overlay.data, a = +$("eop").value / 100 * 255;
  x0 = Math.max(0, x0 | 0); y0 = Math.max(0, y0 | 0); x1 = Math.min(n, Math.ceil(x1)); y1 = Math.min(n, Math.ceil(y1));
  if (x1 <= x0 || y1 <= y0) return;
  for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) {
    const i = y * n + x, j = i * 4;
    d[j] = 255; d[j + 1] = 40; d[j + 2] = 40; d[j + 3] = E.mask[i] * a;
  }
  $("emask").getContext("2d").putImageData(E.overlay, 0, 0, x0, y0, x1 - x0, y1 - y0);
}

function stamp(cx, cy) {
  const r = +$("bsize").value / 2, hard = 1 - +$("bsoft").value / 100, n = E.size;
  const add = document.querySelector('input[name="mode"]:checked').value === "add";
  const x0 = Math.max(0, Math.floor(cx - r)), x1 = Math.min(n - 1, Math.ceil(cx + r));
  const y0 = Math.max(0, Math.floor(cy - r)), y1 = Math.min(n - 1, Math.ceil(cy + r));
  for (let y = y0; y <= y1; y++) for (let x = x0; x <= x1; x++) {
    const t = Math.hypot(x - cx, y - cy) / Math.max(r, 0.5);
    if (t >= 1) continue;
    let w = t <= hard ? 1 : (1 - t) / (1 - hard);
    w = w * w * (3 - 2 * w); // smooth edge
    const i = y * n + x;
    E.mask[i] = add ? Math.max(E.mask[i], w) : Math.min(E.mask[i], 1 - w);
  }
  drawMask(x0, y0, x1 + 1, y1 + 1);
  E.dirty = true;
}

function toCrop(ev) {
  const b = $("emask").getBoundingClientRect();
  return [(ev.clientX - b.left) / E.scale - 0.5, (ev.clientY - b.top) / E.scale - 0.5];
}

$("emask").addEventListener("pointerdown", (ev) => {
  if (!E.mask) return;
  E.painting = true; $("emask").setPointerCapture(ev.pointerId);
  E.last = toCrop(ev); stamp(...E.last);
});
$("emask").addEventListener("pointermove", (ev) => {
  if (!E.painting) return;
  const p = toCrop(ev), [lx, ly] = E.last;
  const step = Math.max(1, +$("bsize").value / 8), dist = Math.hypot(p[0] - lx, p[1] - ly);
  for (let s = step; s <= dist; s += step) stamp(lx + (p[0] - lx) * s / dist, ly + (p[1] - ly) * s / dist);
  stamp(...p);
  E.last = p;
});
for (const t of ["pointerup", "pointercancel"]) $("emask").addEventListener(t, () => { E.painting = false; });
$("bsize").addEventListener("input", () => { $("bsizev").textContent = $("bsize").value + " px"; });
$("bsizev").textContent = $("bsize").value + " px";
$("eop").addEventListener("input", () => E.mask && drawMask(0, 0, E.size, E.size));
$("ekind").addEventListener("change", async () => {
  if (E.dirty && !confirm("Discard the unsaved edit?")) return;
  await loadMask();
});
window.addEventListener("resize", () => { if (!$("editor").hidden && E.size) fit(); });

$("esave").addEventListener("click", async () => {
  const kind = $("ekind").value, n = E.size;
  const out = new Uint16Array(n * n);
  for (let i = 0; i < out.length; i++) out[i] = Math.round(Math.min(1, Math.max(0, E.mask[i])) * 65535);
  estatus("saving…");
  try {
    const r = await api("PUT", `/api/mask/${encodeURIComponent(E.id)}?kind=${kind}`, out.buffer,
      { "Content-Type": "application/octet-stream", "X-Mask-Version": E.version || "none" });
    E.version = (await r.json()).version; E.dirty = false;
    estatus(`saved user_${kind} of ${E.id}`);
    document.body.dataset.saved = E.id + ":" + E.version;
    if (S.overlay) render();
  } catch (e) {
    estatus("NOT SAVED: " + e.message + " (the edit stays here)", true);
  }
});
$("eclose").addEventListener("click", () => {
  if (E.dirty && !confirm("The mask edit is not saved. Close anyway?")) return;
  $("editor").hidden = true; E.mask = null;
  for (const c of S.cells.values()) c.dataset.src = ""; // overlays may have changed
  render();
});

run(refresh);
