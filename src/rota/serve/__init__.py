"""``rota serve``: a live web page of a run, read from its state folder (read-only).

- :mod:`rota.serve.views`: pure functions from a status snapshot to what the page shows
  (a filtered page of the task table, the timeline, GPU series, results);
- :mod:`rota.serve.cache`: the throttled, read-only reader of the state folder that every
  request shares (one read a second at most, whatever the number of browsers);
- :mod:`rota.serve.table`: the task rows kept between reads, each read taking only the rows that
  changed (:func:`rota.store.read.read_changed`);
- :mod:`rota.serve.app`: the Starlette application (routes, the token check);
  :mod:`rota.serve.bodies`: its answers encoded (and gzip'd) once per value, not per request;
- ``static/index.html``: the page (HTML and JS, no build step; plotly.js is served from the
  installed plotly package).

Needs the ``serve`` extra (Starlette, uvicorn).
"""
