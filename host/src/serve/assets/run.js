// A running run's page (included by pages.rs): its current steps follow
// GET /ui/events; when the run ends the page reloads into the waterfall.
(() => {
  const live = document.getElementById('live');
  if (!live || !window.EventSource) return;
  const id = live.dataset.run;
  const running = {};
  const show = () => { document.getElementById('current').textContent = Object.entries(running).map(([s, a]) => s + ' #' + a).join(', ') || '-'; };
  const events = new EventSource('/ui/events');
  const on = (name, f) => events.addEventListener(name, e => f(JSON.parse(e.data)));
  on('runs', list => {
    const r = list.find(r => r.run_id === id);
    if (!r) { events.close(); location.reload(); return; }
    Object.keys(running).forEach(k => delete running[k]); Object.assign(running, r.running); show();
  });
  on('step', c => {
    if (c.run_id !== id) return;
    if (c.state === 'running') running[c.step] = c.attempt; else if (running[c.step] === c.attempt) delete running[c.step];
    show();
  });
  const over = c => { if (c.run_id === id) { events.close(); location.reload(); } };
  on('ended', over); on('refused', over);
})();
