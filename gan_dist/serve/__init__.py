"""A web demo and HTTP API for a trained generator: `python -m gan_dist.serve --workdir=W` (see __main__.py).

  model.py    the generator of a workdir or SavedModel export, its facts, bucketed generation
  app.py      the Flask application: the page (static/) and the API (generate, walk, info, health)
  __main__.py the command line: waitress serving the application
  static/     index.html, demo.css, demo.js: the page, plain HTML/CSS/JavaScript with nothing from other sites

Needs the `serve` extra (Flask, waitress): pip install -e '.[serve]'.
"""
