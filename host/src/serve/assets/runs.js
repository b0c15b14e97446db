// The runs page's live part (included by pages.rs): follows GET /ui/events,
// keeps "In flight here" current and adds each run that ends (and matches
// the page's filters) to the top of "Finished", or of "Waiting" when it
// parks (waiting or suspended). No framework; DOM calls only.
(() => {
  const live = document.getElementById('live');
  if (!live || !window.EventSource) return;
  const want = live.dataset;
  const flight = document.querySelector('#in-flight tbody');
  const done = document.querySelector('#finished tbody');
  const parked = document.querySelector('#waiting tbody');
  const runs = new Map();
  const matches = r => (!want.workflow || r.workflow === want.workflow) && (!want.trace || r.trace_id === want.trace);
  const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };
  const cell = (tr, child, cls) => { const td = el('td', undefined, cls); td.append(child); tr.append(td); };
  const runLink = id => { const a = el('a'); a.href = '/ui/runs/' + encodeURIComponent(id); a.append(el('code', id)); return a; };
  const traceLink = id => { const a = el('a'); a.href = '/ui/traces/' + encodeURIComponent(id); a.append(el('code', id)); return a; };
  const utc = ms => new Date(ms).toUTCString();
  const dur = ms => ms < 1000 ? ms.toFixed(1) + ' ms' : (ms / 1000).toFixed(2) + ' s';
  const current = r => Object.entries(r.running).map(([s, a]) => s + ' #' + a).join(', ') || '-';
  const show = () => {
    flight.replaceChildren(...[...runs.values()].map(r => {
      const tr = el('tr'); tr.dataset.run = r.run_id; tr.dataset.live = 'running';
      cell(tr, runLink(r.run_id)); cell(tr, r.workflow); cell(tr, current(r), 'current');
      cell(tr, utc(r.started_at_ms)); cell(tr, el('code', r.trace_id));
      return tr;
    }));
    document.getElementById('none-in-flight').hidden = runs.size > 0;
  };
  const events = new EventSource('/ui/events');
  const on = (name, f) => events.addEventListener(name, e => f(JSON.parse(e.data)));
  on('runs', list => { runs.clear(); list.filter(matches).forEach(r => runs.set(r.run_id, r)); show(); });
  on('started', r => { if (matches(r)) { runs.set(r.run_id, r); show(); } });
  on('step', c => {
    const r = runs.get(c.run_id); if (!r) return;
    if (c.state === 'running') r.running[c.step] = c.attempt;
    else if (r.running[c.step] === c.attempt) delete r.running[c.step];
    show();
  });
  on('refused', c => { if (runs.delete(c.run_id)) show(); });
  on('ended', e => {
    if (runs.delete(e.run_id)) show();
    if (e.outcome === 'waiting' || e.outcome === 'suspended') {
      if (!parked || !matches(e) || [...parked.children].some(tr => tr.dataset.run === e.run_id)) return;
      const tr = el('tr'); tr.dataset.run = e.run_id; tr.dataset.live = e.outcome;
      cell(tr, runLink(e.run_id)); cell(tr, e.workflow); cell(tr, el('span', e.outcome + ' (open the run for what)', 'muted'));
      cell(tr, utc(Date.now())); cell(tr, ''); cell(tr, traceLink(e.trace_id));
      parked.prepend(tr);
      document.getElementById('waiting-runs').hidden = false;
      return;
    }
    if (!matches(e) || (want.status && want.status !== e.outcome)) return;
    if ([...done.children].some(tr => tr.dataset.run === e.run_id)) return;
    const tr = el('tr'); tr.dataset.run = e.run_id; tr.dataset.live = 'ended';
    cell(tr, runLink(e.run_id)); cell(tr, e.workflow); const outcome = el('span', e.outcome, 'outcome ' + e.outcome);
    const badges = el('span'); badges.append(outcome);
    if (e.degraded) badges.append(' ', el('span', 'degraded', 'outcome degraded'));
    cell(tr, badges);
    cell(tr, utc(e.started_at_ms)); cell(tr, dur(e.duration_ms), 'num'); cell(tr, traceLink(e.trace_id));
    done.prepend(tr);
    const none = document.getElementById('none-finished'); if (none) none.remove();
  });
})();
