// Page logic of the wgpu-attention browser demo. The work is done in wasm (./pkg, built by
// web/test.sh): adapter_info(), mask_kinds(), run_attention(config JSON: a validation::Case + paths),
// validation_cases() + run_case(case JSON), embed_check().
// Results for scripts: window.__result (auto-run on load, then every Run), window.__validation
// (Validate), window.__embed (embed_check after the auto-run); body[data-done] is set after the
// auto-run, body[data-validated] after Validate.
import init, { adapter_info, check_shaders, disable_features, embed_check, mask_kinds, run_attention, run_case, validation_cases } from './pkg/wgpu_attention_web.js';

const $ = (id) => document.getElementById(id);
const fmt = (x, d = 2) => (x === null || x === undefined) ? '–' : Number(x).toFixed(d);
const sci = (x) => (x === null || x === undefined) ? '–' : Number(x).toExponential(2);
const esc = (s) => String(s).replace(/[&<>]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;' })[c]);
const state = { busy: false, adapter: null, shaders: null };
window.__result = null;
window.__validation = null;
window.__embed = null;

function setStatus(text, cls) { $('status').textContent = text; $('status').className = cls || ''; }
function showError(e) { $('error').textContent = e ? `error: ${e}` : ''; }

// Colour map (viridis-like stops) of t in [0, 1]; exposed so a test can check the canvas.
const STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function colormap(t) {
  t = Math.min(1, Math.max(0, t)) * (STOPS.length - 1);
  const i = Math.min(STOPS.length - 2, Math.floor(t)), f = t - i;
  return STOPS[i].map((a, k) => Math.round(a + (STOPS[i + 1][k] - a) * f));
}
const MASKED_RGB = [215, 215, 215]; // weights exactly 0 (masked keys, fully masked rows)
// Colour of one weight given the largest weight of its row (each row scaled to its own
// max, so the pattern of every query is visible whatever its number of visible keys).
function weightColor(w, rowMax) { return w === 0 ? MASKED_RGB : colormap(rowMax > 0 ? w / rowMax : 0); }
window.__weightColor = weightColor;

function drawColorbar() {
  const c = $('colorbar'), x = c.getContext('2d');
  for (let i = 0; i < c.width; i++) {
    const [r, g, b] = colormap(i / (c.width - 1));
    x.fillStyle = `rgb(${r},${g},${b})`; x.fillRect(i, 0, 1, c.height);
  }
}

function drawHeatmap(data, rows, cols) {
  const canvas = $('heatmap'), ctx = canvas.getContext('2d');
  let max = 0;
  const rowMax = new Float32Array(rows);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) rowMax[i] = Math.max(rowMax[i], data[i * cols + j]);
  for (const m of rowMax) if (m > max) max = m;
  const off = document.createElement('canvas');
  off.width = cols; off.height = rows;
  const octx = off.getContext('2d'), img = octx.createImageData(cols, rows);
  for (let i = 0; i < rows * cols; i++) {
    const [r, g, b] = weightColor(data[i], rowMax[Math.floor(i / cols)]);
    img.data[4 * i] = r; img.data[4 * i + 1] = g; img.data[4 * i + 2] = b; img.data[4 * i + 3] = 255;
  }
  octx.putImageData(img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(off, 0, 0, canvas.width, canvas.height);
  $('pmax').textContent = 'row max';
  $('heatinfo').textContent = `${rows} queries (rows) × ${cols} keys (columns); each row scaled to its ` +
    `own max (largest weight ${fmt(max, 4)}); grey = weight 0 (masked)`;
  window.__heat = { rows, cols, max, rowMax: Array.from(rowMax), data: Array.from(data) };
}

// What the browser itself says about its adapter (wgpu's AdapterInfo.name is the often empty
// GPUAdapterInfo.description, and wgpu does not map every WebGPU feature).
async function browserAdapter() {
  const a = await navigator.gpu.requestAdapter();
  if (!a) return null;
  const i = a.info || {};
  return { vendor: i.vendor, architecture: i.architecture, device: i.device, description: i.description,
           isFallbackAdapter: i.isFallbackAdapter, subgroupMinSize: i.subgroupMinSize, subgroupMaxSize: i.subgroupMaxSize,
           features: [...a.features].sort() };
}

function adapterLabel(a) {
  const b = a.browser || {};
  const parts = [b.vendor, b.architecture, b.device, b.description].filter((x) => x);
  return parts.length ? parts.join(' / ') : (a.name || '(unnamed adapter)');
}

function showAdapter(a) {
  $('adapter').textContent = `${adapterLabel(a)} — wgpu ${a.backend}, ${a.device_type}` +
    (a.browser && a.browser.isFallbackAdapter ? ' (fallback adapter)' : '');
  const badge = (name, on) => `<span class="badge ${on ? 'yes' : 'no'}">${name}: ${on ? 'yes' : 'no'}</span>`;
  const g = a.granted_features, ad = a.adapter_features;
  $('features').innerHTML = 'features (granted to the device): ' +
    badge('shader-f16', g.f16) + badge('subgroups', g.subgroups) + badge('timestamps', g.timestamps) +
    (ad.subgroups !== g.subgroups || ad.f16 !== g.f16 ? ' (adapter differs)' : '') +
    (a.browser && a.browser.features.includes('subgroups') && !ad.subgroups
      ? ' (the browser has "subgroups"; wgpu 30 does not map it)' : '') +
    ` subgroup size ${a.subgroup_size.min}–${a.subgroup_size.max}` +
    ` · default kernel variant: ${a.tuning.staged ? 'staged' : 'direct'}, softmax workgroup ${a.tuning.softmax_workgroup}` +
    ` · fused kernel at D 64 (plan): ${a.fused_d64}`;
  const l = a.limits;
  $('limits').textContent = Object.entries(l).map(([k, v]) => `${k}=${v}`).join('  ') +
    (a.browser ? `\nbrowser features: ${a.browser.features.join(' ')}` : '');
}

// Every kernel's WGSL as the browser's compiler sees it (errors also explain a later
// "invalid pipeline").
function showShaders(list) {
  $('shaders').innerHTML = 'WGSL compiled by this browser: ' + list.map((k) =>
    `<span class="badge ${k.skipped ? '' : k.ok ? 'yes' : 'no FAIL'}">${esc(k.kernel)}: ${k.skipped ? 'skipped, ' + esc(k.skipped) : k.ok ? 'ok' : 'ERROR'}</span>`).join('') +
    list.filter((k) => !k.ok).map((k) => `<div class="FAIL mono">${esc(k.kernel)}: ` +
      esc(k.messages.map((m) => `${m.type} ${m.line}:${m.column} ${m.message}`).join(' | ') || k.scope_error) + '</div>').join('');
}

function showRun(r) {
  $('verdict').innerHTML = `<span class="${r.pass ? 'PASS' : 'FAIL'}">${r.pass ? 'PASS' : 'FAIL'}</span>`;
  const s = r.shape;
  $('summary').textContent = `Q [${s.b},${s.hq},${s.nq},${s.d}]  K,V [${s.b},${s.hkv},${s.nk},${s.d}]  ${r.layout} ${r.dtype}${r.dtype === "f16" ? " (" + r.f16_storage + ")" : ""}` +
    `  ${r.masking}` + (r.dense_mask ? `  dense ${r.dense_mask.kind} mask ${JSON.stringify(r.dense_mask.dims)}` : '') +
    (r.alibi ? '  ALiBi' : '') + (r.softcap ? `  softcap ${r.softcap}` : '');
  // What ran, as the library's plan describes it (Plan::describe).
  $('kernels').innerHTML = Object.entries(r.kernels).map(([path, k]) => `<b>${esc(path)}</b>: ${esc(k)}`).join('<br>') +
    // Classes tuned by this run (TuningMode::Autotune; later runs find them in the cache).
    (r.autotune || []).map((c) => `<br><b>autotuned</b> ${esc(c.class)} in ${fmt(c.ms, 0)} ms: ` + c.candidates.map((t) =>
      `<span class="${t.chosen ? 'PASS' : ''}">${esc(t.kernel)} ${t.skipped ? '(over budget)' : t.error ? 'ERROR ' + esc(t.error) :
        `${fmt(t.run_ms, 2)} ms + compile ${fmt(t.compile_ms, 0)} ms`}${t.chosen ? ' ✓' : ''}</span>`).join(' · ')).join('');
  const row = (name, e) => `<tr><td class="l">${name}</td><td>${e.len}</td><td>${sci(e.max_abs)}</td><td>${sci(e.rel_l2)}</td>` +
    `<td>${e.nan}</td><td class="${e.pass ? 'PASS' : 'FAIL'}">${e.pass ? 'pass' : 'FAIL'}</td></tr>`;
  $('errors').innerHTML = '<tr><th class="l">vs f64 reference</th><th>elements</th><th>max abs</th><th>rel L2</th><th>NaN</th><th></th></tr>' +
    Object.entries(r.errors).map(([k, e]) => row(k, e)).join('');
  const lines = Object.entries(r.timings).map(([path, t]) =>
    `<b>${path}</b>: first run (compile + dispatch + readback) ${fmt(t.first_run_ms, 1)} ms · ${t.clock}: median ${fmt(t.median_ms, 3)} ms of ${t.repeats_ms.length}` +
    (t.gflops ? ` (${fmt(t.gflops, 2)} GFLOP/s)` : '') + ` [${t.repeats_ms.map((x) => fmt(x, 3)).join(', ')}]`);
  $('timings').innerHTML = lines.join('<br>') +
    (r.fused_speedup_over_unfused ? `<br>fused is ${fmt(r.fused_speedup_over_unfused, 2)}× the unfused speed` : '') +
    `<br>f64 CPU reference (wasm): ${fmt(r.reference_ms, 1)} ms · whole run ${fmt(r.total_ms, 1)} ms`;
}

// The form as the library's validation::Case (the same fields `attn validate --json` writes),
// plus the paths to run.
function formConfig() {
  const num = (id) => Number($(id).value);
  const variant = $('variant').value;
  return {
    case: {
      b: num('b'), hq: num('heads'), hkv: num('kv_heads'), nq: num('n'), nk: num('n'), d: num('d'),
      layout: $('layout').value, causal: $('causal').checked, mask: $('mask').value, seed: num('seed'),
      staged: variant === '' || variant === 'autotune' ? null : variant === 'staged',
    },
    paths: [...document.querySelectorAll('input[name=path]:checked')].map((x) => x.value), repeats: 5, heatmap: true,
    autotune: variant === 'autotune', autotune_budget_ms: 8000,
    dtype: $('dtype').value,
  };
}

// The mask choices are the library's mask kinds (validation::MASK_KINDS).
function fillMaskKinds(kinds, selected) {
  $('mask').innerHTML = kinds.map((k) => `<option value="${esc(k)}"${k === selected ? ' selected' : ''}>${esc(k)}</option>`).join('');
}

async function runOnce() {
  const cfg = formConfig();
  setStatus('running', 'RUNNING'); showError('');
  const res = { ok: false, adapter: state.adapter, shaders: state.shaders, config: cfg, run: null, heatmap: null, error: null };
  try {
    const out = await run_attention(JSON.stringify(cfg));
    const r = JSON.parse(out.json());
    const heat = out.heat(), rows = out.heat_rows(), cols = out.heat_cols();
    out.free();
    res.run = r;
    showRun(r);
    drawHeatmap(heat, rows, cols);
    res.heatmap = { rows, cols, max: window.__heat.max };
    res.ok = r.pass === true;
  } catch (e) {
    res.error = String(e && e.stack || e);
    showError(res.error);
  }
  setStatus(res.ok ? 'PASS' : 'FAIL', res.ok ? 'PASS' : 'FAIL');
  window.__result = res;
  console.log('[demo] run ' + (res.ok ? 'PASS' : 'FAIL') + ' ' + JSON.stringify(res.run ? Object.entries(res.run.errors).map(([k, e]) => `${k}: ${e.text}`) : res.error));
  return res;
}

async function validate() {
  const cases = JSON.parse(validation_cases());
  const v = { ok: false, cases: cases.length, passed: 0, rows: [], error: null, ms: 0 };
  const t0 = performance.now();
  $('vverdict').innerHTML = '<span class="RUNNING">running</span>';
  $('vtable').innerHTML = '<tr><th>#</th><th class="l">case</th><th>max abs (O)</th><th>rel L2 (O)</th>' +
    '<th>rel L2 (P)</th><th>rel L2 (LSE)</th><th>ms</th><th>pass</th></tr>';
  for (let i = 0; i < cases.length; i++) {
    const c = cases[i];
    const row = { case: c.name, max_abs: null, rel_l2: null, rel_l2_weights: null, rel_l2_lse: null, pass: false, error: null };
    const t = performance.now();
    try {
      const r = JSON.parse(await run_case(JSON.stringify(c)));
      const rep = Object.fromEntries(r.reports);
      Object.assign(row, { max_abs: rep.o && rep.o.max_abs, rel_l2: rep.o && rep.o.rel_l2,
        rel_l2_weights: rep.weights ? rep.weights.rel_l2 : null, rel_l2_lse: rep.lse && rep.lse.rel_l2, pass: r.pass === true });
      if (!row.pass) row.error = r.error || JSON.stringify(r.reports);
    } catch (e) {
      row.error = String(e && e.stack || e);
    }
    row.ms = performance.now() - t;
    v.rows.push(row);
    if (row.pass) v.passed++;
    $('vtable').insertAdjacentHTML('beforeend', `<tr><td>${i + 1}</td><td class="l">${esc(c.name)}</td>` +
      `<td>${sci(row.max_abs)}</td><td>${sci(row.rel_l2)}</td><td>${sci(row.rel_l2_weights)}</td><td>${sci(row.rel_l2_lse)}</td>` +
      `<td>${fmt(row.ms, 0)}</td><td class="${row.pass ? 'PASS' : 'FAIL'}">${row.pass ? 'pass' : 'FAIL'}</td></tr>` +
      (row.error ? `<tr><td></td><td class="l FAIL" colspan="7">${esc(row.error)}</td></tr>` : ''));
    $('vsummary').textContent = `${v.passed} / ${i + 1} of ${cases.length} cases passed`;
  }
  v.ms = performance.now() - t0;
  v.ok = v.cases > 0 && v.passed === v.cases;
  $('vverdict').innerHTML = `<span class="${v.ok ? 'PASS' : 'FAIL'}">${v.ok ? 'PASS' : 'FAIL'}</span>`;
  $('vsummary').textContent = `${v.passed} / ${v.cases} cases passed in ${fmt(v.ms / 1000, 1)} s (relative L2 ≤ 1e-5 for O, LSE and (unfused) P, no NaN)`;
  window.__validation = v;
  console.log(`[demo] validation ${v.ok ? 'PASS' : 'FAIL'} ${v.passed}/${v.cases}`);
  return v;
}

// The library inside an app's own wgpu work (examples/embed.rs in the browser): on a device
// the wasm makes for itself, not the page's; the result goes to window.__embed only.
async function embedCheck() {
  let e;
  const t0 = performance.now();
  try {
    e = JSON.parse(await embed_check());
  } catch (x) {
    e = { ok: false, error: String(x && x.stack || x) };
  }
  e.ms = performance.now() - t0;
  window.__embed = e;
  console.log('[demo] embed ' + (e.ok ? 'PASS' : 'FAIL') + ' ' + JSON.stringify(e));
  return e;
}

async function exclusive(f) {
  if (state.busy) return;
  state.busy = true; $('run').disabled = $('validate').disabled = true;
  try { return await f(); } finally { state.busy = false; $('run').disabled = $('validate').disabled = false; }
}

$('run').addEventListener('click', () => exclusive(runOnce));
$('validate').addEventListener('click', () => exclusive(async () => {
  setStatus('validating', 'RUNNING');
  const v = await validate();
  setStatus(v.ok ? 'PASS' : 'FAIL', v.ok ? 'PASS' : 'FAIL');
  document.body.dataset.validated = '1';
}));

drawColorbar();
await exclusive(async () => {
  try {
    await init();
    fillMaskKinds(JSON.parse(mask_kinds()), 'key-padding');
    const params = new URLSearchParams(location.search);
    if (params.get('disable')) disable_features(params.get('disable')); // e.g. ?disable=timestamp
    state.adapter = JSON.parse(await adapter_info());
    state.adapter.browser = await browserAdapter().catch(() => null);
    state.adapter.label = adapterLabel(state.adapter);
    showAdapter(state.adapter);
    console.log('[demo] adapter ' + JSON.stringify(state.adapter));
    state.shaders = JSON.parse(await check_shaders());
    showShaders(state.shaders);
    await runOnce();
  } catch (e) {
    const msg = String(e && e.stack || e);
    $('adapter').textContent = 'no WebGPU adapter';
    showError(msg); setStatus('FAIL', 'FAIL');
    window.__result = { ok: false, adapter: null, run: null, error: msg };
    console.log('[demo] ' + msg);
  }
});
document.body.dataset.done = '1';
if (new URLSearchParams(location.search).has('validate')) $('validate').click();
embedCheck(); // not awaited: Run / Validate stay as they were
