"""The report's inline stylesheet and script (no network, no CDN: the HTML file is self-contained).

The script reads the JSON that `data.report_data` embeds, renders one page of episodes at a time
(so 10,000 episodes stay responsive), and fills a shared tooltip on hover by event delegation.
"""

CSS = """
body{font:13px/1.45 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{position:sticky;top:0;z-index:5;background:#fff;border-bottom:1px solid #ddd;padding:8px 12px}
h1{font-size:16px;margin:0 0 6px}
.bar{display:flex;flex-wrap:wrap;gap:8px;align-items:center}
.bar label{display:flex;gap:4px;align-items:center}
select{max-width:220px}
button{cursor:pointer;border:1px solid #bbb;background:#f4f4f4;border-radius:4px;padding:2px 8px}
button.on{background:#2166ac;color:#fff;border-color:#2166ac}
#legend{display:flex;align-items:center;gap:4px}
#legend .grad{width:160px;height:12px;border:1px solid #999;background:linear-gradient(to right,#b2182b,#fff,#2166ac)}
main{padding:8px 12px}
.ep{background:#fff;border:1px solid #ddd;border-radius:6px;margin:8px 0;padding:6px 8px}
.eh{font-weight:600;display:flex;gap:10px;flex-wrap:wrap;align-items:center}
.eh .ok{color:#1a7f37}.eh .no{color:#b2182b}
.turn{border-left:3px solid #ddd;margin:6px 0 6px 4px;padding-left:6px}
.turn.disagree{border-left-color:#e08214;background:#fff7ec}
.obs{white-space:pre-wrap;color:#555;background:#f3f3f3;border-radius:4px;padding:3px 6px;max-height:7.5em;overflow:hidden;cursor:pointer}
.obs.open{max-height:none}
.act{white-space:pre-wrap;font-family:ui-monospace,monospace;margin:3px 0;padding:2px 0}
.act .lab{font:11px system-ui;color:#777;margin-right:6px}
.tk{border-radius:1px}
.tk.mask{outline:1px dashed #999}
.tm{font-size:11px;color:#666}
.flag{color:#e08214;font-weight:700}
#tip{position:fixed;display:none;z-index:9;background:#222;color:#fff;font:12px ui-monospace,monospace;padding:5px 8px;border-radius:4px;white-space:pre;pointer-events:none}
#group{display:none;background:#eef3f8;border:1px solid #9bb;border-radius:6px;padding:6px 8px;margin:8px 0}
#group .cols{display:flex;gap:8px;overflow-x:auto;align-items:flex-start}
#group .cols .ep{min-width:300px;max-width:420px;flex:0 0 auto;margin:0}
ul.tree{margin:2px 0 2px 14px;padding:0;list-style:none;font-size:12px}
ul.tree li{margin:1px 0}
ul.tree .nd{padding:0 4px;border-radius:3px;font-family:ui-monospace,monospace}
#curves{display:flex;flex-wrap:wrap;gap:8px}
svg.chart{background:#fff;border:1px solid #ddd;border-radius:4px}
svg .ct{font:600 11px system-ui}svg .ax{font:10px system-ui;fill:#666}svg .lg{font:10px system-ui}
details{margin:6px 0}
"""

JS = r"""
const D = JSON.parse(document.getElementById('data').textContent);
const S = D.S, E = D.E, EST = D.est;
const st = {est: 0, cmp: EST.length > 1 ? 1 : -1, g: '', k: '', r: '', o: 'all', dis: false, page: 0, size: 20};
const $ = id => document.getElementById(id);
const esc = s => String(s).replace(/[&<>"]/g, c => ({'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c]));
const f4 = x => (x === null || x === undefined) ? '–' : (+x).toFixed(4);
const scales = {};
function scale(x) {  // 95th percentile of |turn advantage| of estimator x: the colour scale's end
  if (scales[x] === undefined) {
    const v = [];
    for (const e of E) { const a = e.A[x]; if (a) for (const y of a.k) if (y !== null) v.push(Math.abs(y)); }
    v.sort((a, b) => a - b);
    scales[x] = v.length ? (v[Math.floor(0.95 * (v.length - 1))] || v[v.length - 1] || 1) : 1;
  }
  return scales[x];
}
function colour(a, x) {
  if (a === null || a === undefined) return 'transparent';
  const t = Math.max(-1, Math.min(1, a / scale(x)));
  const [r, g, b] = t < 0 ? [178, 24, 43] : [33, 102, 172];
  const m = Math.abs(t) * 0.85;  // the darkest shade keeps dark text readable
  return `rgb(${Math.round(255 + (r - 255) * m)},${Math.round(255 + (g - 255) * m)},${Math.round(255 + (b - 255) * m)})`;
}
function tokAdv(e, x, k, j) { const a = e.A[x]; if (!a) return null; const t = a.t[k]; return Array.isArray(t) ? t[j] : t; }
function sign(x) { return x > 0 ? 1 : x < 0 ? -1 : 0; }
function disagrees(e, k) {
  if (st.cmp < 0) return false;
  const a = e.A[st.est], b = e.A[st.cmp];
  return !!(a && b && sign(a.k[k]) * sign(b.k[k]) < 0);
}
function nDis(e) { let n = 0; for (let k = 0; k < e.T.length; k++) if (disagrees(e, k)) n++; return n; }
function matches(e) {
  if (st.g && e.g !== st.g) return false;
  if (st.k && e.k !== st.k) return false;
  if (st.r && e.r !== st.r) return false;
  if (st.o !== 'all' && String(e.s) !== st.o) return false;
  if (st.dis && nDis(e) === 0) return false;
  return true;
}
function tokens(e, i, k, x) {
  const t = e.T[k];
  let out = '', p = 0;
  for (let j = 0; j < t.L.length; j++) {
    const s = t.a.slice(p, p + t.L[j]); p += t.L[j];
    const m = t.m && t.m[j] === 0 ? ' mask' : '';
    out += `<span class="tk${m}" data-i="${i}" data-k="${k}" data-j="${j}" data-x="${x}" style="background:${colour(tokAdv(e, x, k, j), x)}">${esc(s)}</span>`;
  }
  return out;
}
function turnHtml(e, i, k) {
  const t = e.T[k], dis = disagrees(e, k);
  let h = `<div class="turn${dis ? ' disagree' : ''}" data-k="${k}">`;
  if (S[t.o]) h += `<div class="obs" title="click to expand">${esc(S[t.o])}</div>`;
  const xs = st.cmp >= 0 ? [st.est, st.cmp] : [st.est];
  for (const x of xs) h += `<div class="act"><span class="lab">${esc(EST[x] || '')}</span>${tokens(e, i, k, x)}</div>`;
  let meta = `turn ${k} · reward ${f4(t.w)}`;
  for (const x of xs) meta += ` · A<sub>${esc(EST[x])}</sub> ${f4(e.A[x] ? e.A[x].k[k] : null)}`;
  if (e.mc) meta += ` · MC truth ${f4(e.mc[k])}` + (e.se ? ` ± ${f4(e.se[k])}` : '');
  if (t.iv) meta += ' · <span class="flag">invalid</span>';
  if (dis) meta += ' · <span class="flag">⚠ signs disagree</span>';
  return h + `<div class="tm">${meta}</div></div>`;
}
function epHtml(i) {
  const e = E[i], n = nDis(e);
  let h = `<div class="ep" data-i="${i}"><div class="eh"><span>${esc(e.id)}</span><span>task ${esc(e.k)}</span>` +
    `<span>group <button class="grp" data-g="${esc(e.g)}" title="show the group side by side">${esc(e.g)} ↔</button></span>` +
    `<span>${esc(e.r)}</span><span class="${e.s ? 'ok' : 'no'}">${e.s ? '✔ success' : '✘ failure'}</span>` +
    `<span>return ${f4(e.R)}</span><span>${e.T.length} turns${e.x ? ' (truncated)' : ''}</span>` +
    (e.v !== undefined ? `<span>policy v${e.v}</span>` : '');
  if (n) h += `<span class="flag">${n} turn(s) disagree</span>`;
  h += '</div>';
  for (let k = 0; k < e.T.length; k++) h += turnHtml(e, i, k);
  if (S[e.f]) h += `<div class="obs">${esc(S[e.f])}</div>`;
  return h + '</div>';
}
function treeHtml(key) {
  const nodes = D.trees[key];
  if (!nodes) return '';
  const kids = {}, x = st.est;
  for (const n of nodes) (kids[n[1]] = kids[n[1]] || []).push(n);
  const one = n => {
    const eps = n[4].map(i => E[i]);
    const ret = eps.reduce((s, e) => s + e.R, 0) / eps.length;
    const adv = eps.map(e => e.A[x] ? e.A[x].k[n[2]] : null).filter(a => a !== null);
    const a = adv.length ? adv.reduce((s, v) => s + v, 0) / adv.length : null;
    const mc = eps.filter(e => e.mc).map(e => e.mc[n[2]]);
    const mcs = mc.length ? ` · MC ${f4(mc.reduce((s, v) => s + v, 0) / mc.length)}` : '';
    const sub = (kids[n[0]] || []).map(one).join('');
    return `<li><span class="nd" style="background:${colour(a, x)}">${esc(n[3])}</span> turn ${n[2]} · n=${eps.length} · ` +
      `value (mean return) ${f4(ret)} · A ${f4(a)}${mcs}${sub ? `<ul class="tree">${sub}</ul>` : ''}</li>`;
  };
  return `<details open><summary>prefix tree (${nodes.length} nodes)</summary><ul class="tree">${(kids[-1] || []).map(one).join('')}</ul></details>`;
}
function showGroup(g) {
  const box = $('group');
  if (!g) { box.style.display = 'none'; box.innerHTML = ''; return; }
  const idx = []; E.forEach((e, i) => { if (e.g === g) idx.push(i); });
  const trees = Object.keys(D.trees).filter(k => k.startsWith(g + '|')).map(treeHtml).join('');
  box.innerHTML = `<div class="eh">group ${esc(g)} · ${idx.length} episodes <button id="closegrp">close</button></div>` +
    trees + `<div class="cols">${idx.map(epHtml).join('')}</div>`;
  box.style.display = 'block';
  st.grpShown = g;
}
let shown = [];
function render() {
  shown = [];
  E.forEach((e, i) => { if (matches(e)) shown.push(i); });
  const pages = Math.max(1, Math.ceil(shown.length / st.size));
  st.page = Math.min(st.page, pages - 1);
  const page = shown.slice(st.page * st.size, (st.page + 1) * st.size);
  $('list').innerHTML = page.map(epHtml).join('');
  $('count').textContent = `${shown.length} of ${E.length} episodes · page ${st.page + 1} / ${pages}`;
  const s = scale(st.est);
  $('lmin').textContent = (-s).toPrecision(3); $('lmax').textContent = '+' + s.toPrecision(3);
  if (st.grpShown) showGroup(st.grpShown);
}
function fillSelect(id, values, label) {
  const sel = $(id);
  sel.innerHTML = `<option value="">${label}</option>` + values.map(v => `<option>${esc(v)}</option>`).join('');
}
function uniq(key) { return [...new Set(E.map(e => e[key]))].sort(); }
function setup() {
  fillSelect('fg', uniq('g'), 'all groups'); fillSelect('fk', uniq('k'), 'all tasks'); fillSelect('fr', uniq('r'), 'all roles');
  $('fe').innerHTML = EST.map((n, i) => `<option value="${i}">${esc(n)}</option>`).join('');
  $('fc').innerHTML = '<option value="-1">no comparison</option>' + EST.map((n, i) => `<option value="${i}">${esc(n)}</option>`).join('');
  $('fc').value = String(st.cmp);
  if (!D.tokens) $('note').textContent = 'no tokenizer for these token ids: tokens are shown by id (pass --tokenizer)';
  const on = (id, key, conv) => $(id).addEventListener('change', ev => { st[key] = conv(ev.target.value); st.page = 0; render(); });
  on('fg', 'g', String); on('fk', 'k', String); on('fr', 'r', String); on('fe', 'est', Number); on('fc', 'cmp', Number);
  $('fd').addEventListener('change', ev => { st.dis = ev.target.checked; st.page = 0; render(); });
  document.querySelectorAll('button.of').forEach(b => b.addEventListener('click', () => {
    document.querySelectorAll('button.of').forEach(o => o.classList.toggle('on', o === b));
    st.o = b.dataset.v; st.page = 0; render();
  }));
  $('prev').addEventListener('click', () => { if (st.page > 0) { st.page--; render(); } });
  $('next').addEventListener('click', () => { st.page++; render(); });
  document.body.addEventListener('click', ev => {
    const t = ev.target;
    if (t.classList.contains('grp')) showGroup(t.dataset.g);
    else if (t.id === 'closegrp') { st.grpShown = ''; showGroup(''); }
    else if (t.classList.contains('obs')) t.classList.toggle('open');
  });
  const tip = $('tip');
  document.body.addEventListener('mouseover', ev => {
    const t = ev.target;
    if (!t.classList.contains('tk')) { tip.style.display = 'none'; return; }
    const e = E[+t.dataset.i], k = +t.dataset.k, j = +t.dataset.j, x = +t.dataset.x, turn = e.T[k];
    const lines = [`token      ${JSON.stringify(t.textContent)}`,
      `logprob    ${turn.lp ? f4(turn.lp[j]) : '0 (not recorded)'}`,
      `advantage  ${f4(tokAdv(e, x, k, j))} (${EST[x]}, turn ${f4(e.A[x] ? e.A[x].k[k] : null)})`];
    if (st.cmp >= 0 && st.cmp !== x) lines.push(`vs ${EST[st.cmp]}  ${f4(tokAdv(e, st.cmp, k, j))}`);
    lines.push(`turn reward ${f4(turn.w)}`, `state key  ${S[turn.sk]}`);
    if (turn.at !== undefined) lines.push(`action     ${JSON.stringify(turn.at.slice(0, 200))}`);
    if (turn.p) for (const [n, v] of Object.entries(turn.p)) lines.push(`probe ${n}  ${f4(v)}`);
    if (e.mc) lines.push(`MC truth   ${f4(e.mc[k])}`);
    if (turn.m && turn.m[j] === 0) lines.push('loss mask  0 (not trained)');
    tip.textContent = lines.join('\n');
    tip.style.display = 'block';
    tip.style.left = Math.min(ev.clientX + 12, window.innerWidth - 380) + 'px';
    tip.style.top = (ev.clientY + 14) + 'px';
  });
  render();
  document.body.dataset.ready = '1';
}
setup();
"""
