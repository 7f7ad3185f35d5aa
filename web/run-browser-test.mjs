// Headless-Chromium test of the wgpu-attention browser demo (puppeteer-core + Debian's
// /usr/bin/chromium; never downloads a browser). Started by test.sh.
//
// usage: node run-browser-test.mjs <url> [screenshot.png]
// env:   CHROMIUM (default /usr/bin/chromium), TEST_TIMEOUT_MS (default 300000),
//        EXTRA_CHROME_FLAGS (space separated, appended to the flags below),
//        CHROME_FLAGS (replaces them; e.g. CHROME_FLAGS=--no-sandbox shows the no-WebGPU failure)
// exit:  0 = a WebGPU adapter was found, the auto-run attention, every validation case and the
//        embedding check (window.__embed: the library inside the page's own wgpu work, on a
//        device of its own) passed against the f64 reference, and the heatmap canvas shows the
//        weights;
//        1 = a check failed; 2 = the runner itself failed (browser, page load, timeout).
import puppeteer from 'puppeteer-core';

const url = process.argv[2] || 'http://127.0.0.1:8000/index.html';
const shot = process.argv[3] || 'screenshot.png';
const timeout = Number(process.env.TEST_TIMEOUT_MS || 600000);
const DEFAULT_FLAGS = [
  '--no-sandbox',            // root / containers: no setuid or namespace sandbox
  '--enable-unsafe-webgpu',  // exposes WebGPU on Linux (Dawn; SwiftShader when there is no GPU)
];
const flags = [
  ...(process.env.CHROME_FLAGS ? process.env.CHROME_FLAGS.split(' ').filter(Boolean) : DEFAULT_FLAGS),
  ...(process.env.EXTRA_CHROME_FLAGS || '').split(' ').filter(Boolean),
];

const t0 = Date.now();
const pad = (s, n) => String(s).padEnd(n);
const sci = (x) => (x === null || x === undefined) ? '-' : Number(x).toExponential(2);
const ms = (x) => (x === null || x === undefined) ? '-' : Number(x).toFixed(3);
let browser, code = 2;
try {
  browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [...flags],
    timeout,
    // A waitForSelector is one CDP call: without this, puppeteer's default of
    // 180 s cuts the in-page validation matrix short (180 cases × 2 variants).
    protocolTimeout: timeout,
  });
  console.log(`chromium ${await browser.version()} flags: ${flags.join(' ')}`);
  const page = await browser.newPage();
  await page.setViewport({ width: 1100, height: 900 });
  page.on('console', (m) => {
    const t = m.text();
    if (t.startsWith('Canvas2D: Multiple readback')) return; // our own getImageData sampling below
    if (m.type() === 'error' || m.type() === 'warn' || m.type() === 'warning' || t.startsWith('[demo] run') || t.startsWith('[demo] valid') || t.startsWith('[demo] embed'))
      console.log(`[page ${m.type()}] ${t.length > 400 ? t.slice(0, 400) + '…' : t}`);
  });
  page.on('pageerror', (e) => console.log(`[pageerror] ${e.message}`));
  page.on('requestfailed', (r) => console.log(`[requestfailed] ${r.url()} ${r.failure()?.errorText}`));

  await page.goto(url, { waitUntil: 'load', timeout });
  await page.waitForSelector('body[data-done]', { timeout });
  const res = await page.evaluate(() => window.__result);
  const t1 = Date.now();
  let val = null;
  if (res && res.adapter) { // without an adapter every case would fail the same way
    await page.click('#validate');
    await page.waitForSelector('body[data-validated]', { timeout });
    val = await page.evaluate(() => window.__validation);
  }
  const tVal = Date.now() - t1;

  // Half precision from the page's form: f16 (native where the browser grants
  // shader-f16, packed otherwise) and bf16, on the fused, unfused and decode
  // paths, each checked against the reference on the rounded inputs.
  const halves = [];
  if (res && res.adapter) {
    await page.select('#variant', '');
    await page.evaluate(() => {
      for (const x of document.querySelectorAll('input[name=path]')) x.checked = true;
    });
    for (const dt of ['f16', 'bf16']) {
      await page.select('#dtype', dt);
      await page.evaluate(() => { window.__result = null; });
      await page.click('#run');
      await page.waitForFunction((d) => window.__result && window.__result.config.dtype === d, { timeout }, dt);
      halves.push(await page.evaluate(() => window.__result));
    }
  }

  // The embedding check the page starts after its auto-run (embed_check: its own device,
  // buffers, encoder and passes, the library recorded in between).
  await page.waitForFunction(() => window.__embed, { timeout });
  const emb = await page.evaluate(() => window.__embed);

  // The heatmap must show the auto-run's weights: sample cell centres of the canvas and
  // compare with the colour the page's own colour map gives the downloaded weight.
  const heat = await page.evaluate(() => {
    const h = window.__heat, c = document.getElementById('heatmap');
    if (!h) return { ok: false, why: 'no heatmap data' };
    if (h.rows > c.height || h.cols > c.width) return { ok: true, why: 'cells smaller than a pixel: not sampled', samples: 0 };
    const x = c.getContext('2d');
    const steps = (n) => [...new Set(Array.from({ length: Math.min(n, 16) }, (_, k) => Math.floor(k * n / Math.min(n, 16))))];
    let bad = 0, samples = 0; const colours = new Set(); let firstBad = null;
    for (const i of steps(h.rows)) for (const j of steps(h.cols)) {
      const px = Array.from(x.getImageData(Math.floor((j + 0.5) * c.width / h.cols), Math.floor((i + 0.5) * c.height / h.rows), 1, 1).data);
      const want = window.__weightColor(h.data[i * h.cols + j], h.rowMax[i]);
      samples++; colours.add(px.slice(0, 3).join(','));
      if (px[3] !== 255 || want.some((v, k) => Math.abs(v - px[k]) > 2)) { bad++; firstBad ??= { i, j, got: px, want }; }
    }
    return { ok: bad === 0 && colours.size > 1, samples, bad, distinct_colours: colours.size, firstBad };
  });

  await page.screenshot({ path: shot, fullPage: true });

  // ---- report --------------------------------------------------------------------------
  const a = res && res.adapter;
  console.log('');
  if (a) {
    const b = a.browser;
    console.log(`ADAPTER  ${a.label} | wgpu: backend ${a.backend}, type ${a.device_type}, name ${JSON.stringify(a.name)}` +
      (b ? ` | browser: fallback=${b.isFallbackAdapter} features=[${b.features.join(' ')}]` : ''));
    console.log(`FEATURES granted: f16=${a.granted_features.f16} subgroups=${a.granted_features.subgroups} timestamps=${a.granted_features.timestamps}` +
      ` | adapter: f16=${a.adapter_features.f16} subgroups=${a.adapter_features.subgroups} timestamps=${a.adapter_features.timestamps}` +
      ` | subgroup size ${a.subgroup_size.min}-${a.subgroup_size.max} | kernels ${a.tuning.staged ? 'staged' : 'direct'}, softmax WG ${a.tuning.softmax_workgroup}`);
    console.log(`PLAN     fused at D 64: ${a.fused_d64}`);
    console.log('LIMITS   ' + Object.entries(a.limits).map(([k, v]) => `${k}=${v}`).join(' '));
  } else {
    console.log('ADAPTER  none' + (res && res.error ? `: ${res.error}` : ''));
  }
  const sh = res && res.shaders;
  if (sh) {
    console.log('SHADERS  ' + sh.map((k) => `${k.kernel}=${k.skipped ? 'skipped (' + k.skipped + ')' : k.ok ? 'ok' : 'ERROR'}`).join(' '));
    for (const k of sh.filter((k) => !k.ok || k.messages.length))
      for (const m of k.messages) console.log(`         ${k.kernel}: ${m.type} at ${m.line}:${m.column}: ${m.message}`);
  }
  const r = res && res.run;
  if (r) {
    const s = r.shape, t = r.timings;
    console.log(`RUN      B${s.b} H${s.hq}/${s.hkv} N${s.nq}x${s.nk} D${s.d} ${r.layout} ${r.masking}` +
      (r.dense_mask ? ` + dense ${r.dense_mask.kind} ${JSON.stringify(r.dense_mask.dims)}` : '') + ` -> ${r.pass ? 'PASS' : 'FAIL'}`);
    for (const [path, k] of Object.entries(r.kernels || {})) console.log(`KERNELS  ${pad(path, 8)} ${k}`);
    for (const c of r.autotune || []) {
      console.log(`AUTOTUNE ${c.class}: ${c.ms.toFixed(0)} ms`);
      for (const t of c.candidates) console.log(`         ${t.chosen ? '*' : ' '} ${t.kernel}: ` +
        (t.skipped ? 'over budget' : t.error ? `ERROR ${t.error}` : `${t.run_ms.toFixed(3)} ms, compile ${t.compile_ms.toFixed(0)} ms`));
    }
    for (const [k, e] of Object.entries(r.errors)) console.log(`         ${pad(k, 8)} max_abs=${sci(e.max_abs)} rel_l2=${sci(e.rel_l2)} nan=${e.nan} ${e.pass ? 'pass' : 'FAIL'}`);
    for (const [path, p] of Object.entries(t))
      console.log(`TIMINGS  ${pad(path, 8)} first run (compile+dispatch+readback) ${p.first_run_ms.toFixed(1)} ms | median ${ms(p.median_ms)} ms of ${p.repeats_ms.length} (${p.clock})` +
        (p.gflops ? ` ${p.gflops.toFixed(2)} GFLOP/s` : ''));
    console.log(`TIMINGS  fused/unfused speed ${r.fused_speedup_over_unfused ? r.fused_speedup_over_unfused.toFixed(2) + 'x' : '-'} | f64 reference ${r.reference_ms.toFixed(1)} ms | validation ${(tVal / 1000).toFixed(1)} s`);
  } else if (res) {
    console.log(`RUN      error: ${res.error}`);
  }
  console.log(`HEATMAP  ${heat.ok ? 'ok' : 'MISMATCH'} ${JSON.stringify(heat)}`);
  if (val) {
    console.log(`VALIDATION ${val.passed}/${val.cases} passed`);
    console.log(`  ${pad('#', 3)} ${pad('case', 52)} ${pad('max abs', 9)} ${pad('rel L2', 9)} ${pad('relL2 P', 9)} ${pad('relL2 LSE', 9)} pass`);
    val.rows.forEach((v, i) => {
      console.log(`  ${pad(i + 1, 3)} ${pad(v.case, 52)} ${pad(sci(v.max_abs), 9)} ${pad(sci(v.rel_l2), 9)} ${pad(sci(v.rel_l2_weights), 9)} ${pad(sci(v.rel_l2_lse), 9)} ${v.pass ? 'pass' : 'FAIL'}`);
      if (v.error) console.log(`      ${v.error}`);
    });
  }
  console.log(`screenshot: ${shot}`);

  const failures = [];
  if (!a) failures.push('the page found no WebGPU adapter');
  if (a && !sh) failures.push('the kernels\' WGSL was not checked');
  for (const k of (sh || []).filter((k) => !k.ok)) failures.push(`kernel ${k.kernel}: the browser's WGSL compiler rejects it`);
  if (!r) failures.push('the auto-run attention did not complete' + (res && res.error ? `: ${res.error}` : ''));
  else if (!(res.ok && r.pass)) failures.push('the auto-run attention FAILED against the f64 reference');
  else if (!(r.paths.includes('fused') && r.timings.fused && Object.keys(r.errors).some((k) => k.includes('(fused)'))))
    failures.push('the auto-run did not run and check the fused path');
  else if (!(r.kernels && r.kernels.fused)) failures.push('the auto-run did not report the fused path\'s plan');
  else if (!(r.config.autotune && r.autotune && r.autotune.some((c) => c.class.startsWith('fused') &&
      c.candidates.filter((t) => t.chosen).length === 1 && c.candidates.find((t) => t.chosen).run_ms > 0)))
    failures.push('the auto-run did not autotune the fused class (async, in the page)');
  if (!val) failures.push(a ? 'validation did not complete' : 'validation not run (no adapter)');
  else {
    if (!(val.cases > 0 && val.rows.length === val.cases)) failures.push(`validation ran ${val.rows.length} of ${val.cases} cases`);
    if (!val.ok || val.passed !== val.cases) failures.push(`validation: ${val.cases - val.passed} of ${val.cases} cases FAILED`);
  }
  if (!heat.ok) failures.push('the heatmap canvas does not show the weights');
  if (a && halves.length !== 2) failures.push('the f16/bf16 runs did not complete');
  for (const h of halves) {
    const hr = h.run;
    if (!hr) { failures.push(`${h.config.dtype}: ${h.error}`); continue; }
    console.log(`HALF     ${hr.dtype}${hr.dtype === 'f16' ? ' (' + hr.f16_storage + ')' : ''} tolerance ${sci(hr.rel_l2_tolerance)}: ` +
      Object.entries(hr.errors).map(([k, e]) => `${k} rel_l2=${sci(e.rel_l2)} ${e.pass ? 'pass' : 'FAIL'}`).join(', '));
    if (!(h.ok && hr.pass && hr.dtype === h.config.dtype)) failures.push(`the ${h.config.dtype} run FAILED against the f64 reference` + (h.error ? `: ${h.error}` : ''));
    if (!(hr.timings.fused && hr.timings.decode && hr.timings.unfused)) failures.push(`the ${h.config.dtype} run did not run every path`);
  }
  console.log(`EMBED    ${emb.ok ? 'PASS' : 'FAIL'} rel_l2=${sci(emb.rel_l2)} adapter ${JSON.stringify(emb.adapter ?? null)} (${emb.device_type ?? '-'}, its own device) in ${emb.ms === undefined ? '-' : emb.ms.toFixed(0)} ms | kernels ${emb.kernels ?? '-'}` +
    (emb.error ? ` | error: ${emb.error}` : ''));
  if (!emb.ok) failures.push('the embedding check (embed_check) FAILED' + (emb.error ? `: ${emb.error}` : emb.report ? `: ${emb.report}` : ''));
  for (const f of failures) console.log(`FAIL: ${f}`);
  code = failures.length ? 1 : 0;
} catch (e) {
  console.error('runner error:', e && e.stack || e);
  code = 2;
} finally {
  if (browser) await browser.close().catch(() => {});
  console.log(`browser test ${code === 0 ? 'PASSED' : 'FAILED'} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  process.exit(code);
}
