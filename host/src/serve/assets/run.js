// A running run's page (included by pages.rs): its current steps and
// attempt counts follow GET /ui/events; when the run ends the page reloads
// into the waterfall.
(() => {
  const live = document.getElementById('live');
  if (!live || !window.EventSource) return;
  const id = live.dataset.run;
  const running = {};
  let ended = 0, failed = 0;
  const show = () => {
    document.getElementById('current').textContent = Object.entries(running).map(([s, a]) => s + ' #' + a).join(', ') || '-';
    document.getElementById('attempts').textContent = ended + ' (' + failed + ' failed)';
  };
  const events = new EventSource('/ui/events');
  const on = (name, f) => events.addEventListener(name, e => f(JSON.parse(e.data)));
  on('runs', list => {
    const r = list.find(r => r.run_id === id);
    if (!r) { events.close(); location.reload(); return; }
    Object.keys(running).forEach(k => delete running[k]); Object.assign(running, r.running);
    ended = r.attempts_ended; failed = r.attempts_failed;
    show();
  });
  on('step', c => {
    if (c.run_id !== id) return;
    if (c.state === 'running') {
      running[c.step] = c.attempt;
    } else {
      if (running[c.step] === c.attempt) delete running[c.step];
      ended += 1;
      if (c.state !== 'succeeded') failed += 1;
    }
    show();
  });
  const over = c => { if (c.run_id === id) { events.close(); location.reload(); } };
  on('ended', over); on('refused', over);
})();
