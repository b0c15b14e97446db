// A waiting or suspended run's page (included by pages.rs): its signal and
// cancel forms, or its resume and abort forms.
// The token is typed by the operator, sent once as a bearer token to this
// server's own API, and kept nowhere. On 202 the page waits for the run to
// end (GET /v1/runs/ID?wait=) and reloads.
(() => {
  const answer = document.getElementById('control-answer');
  const api = location.pathname.replace('/ui/runs/', '/v1/runs/');
  const send = async (path, token, body) => {
    answer.textContent = 'sending...';
    const r = await fetch(path, {
      method: 'POST',
      headers: { 'authorization': 'Bearer ' + token, 'content-type': 'application/json' },
      body,
    });
    let said = await r.text();
    try { const j = JSON.parse(said); said = j.error || j.status; } catch (e) { /* shown as sent */ }
    answer.textContent = r.status + ': ' + said;
    if (r.status === 202) {
      await fetch(api + '?wait=60s');
      location.reload();
    }
  };
  for (const form of document.querySelectorAll('form.control')) {
    form.addEventListener('submit', e => {
      e.preventDefault();
      const f = new FormData(form);
      if (form.id === 'signal-form') {
        send(api + '/signals/' + encodeURIComponent(f.get('name')), f.get('token'), f.get('body') || 'null');
      } else if (form.id === 'resume-form') {
        send(api + '/resume', f.get('token'), '{}');
      } else if (form.id === 'abort-form') {
        send(api + '/abort', f.get('token'), JSON.stringify({ reason: f.get('reason') || 'aborted from the viewer' }));
      } else {
        send(api + '/cancel', f.get('token'), JSON.stringify({ reason: f.get('reason') || 'cancelled from the viewer' }));
      }
    });
  }
})();
