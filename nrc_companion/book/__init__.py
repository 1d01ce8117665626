"""The companion book: built from the papermill-executed notebooks, never executing code itself.

``nrc reproduce`` runs the notebooks into a run folder (with ``status.json`` and
``results/NAME.json``); the published book comes from the committed run in ``book/published/``,
and ``nrc book --executed DIR`` builds the same book from any other run folder. The modules follow
a build's steps:

* :mod:`~nrc_companion.book.run`: reading a run folder, refusing one that cannot make a book
  (a notebook missing, failed, or holding an error output), each page's provenance;
* :mod:`~nrc_companion.book.stage`: the staged copy of each executed notebook the reader sees
  (the run's parameter values listed, defaults folded, tables fitted, alt text);
* :mod:`~nrc_companion.book.pages` (with :mod:`~nrc_companion.book.markup` and
  :mod:`~nrc_companion.book.performance`): the generated pages in ``book/generated/``
  (build information, status, parameters, claim scorecard, headline, performance);
* :mod:`~nrc_companion.book.build`: ``nrc book``, which stages the sources and runs
  ``jupyter-book build -n -W --keep-going --all`` with the current Python;
* :mod:`~nrc_companion.book.sphinx_ext`: the Sphinx extension loaded through ``_config.yml``
  (provenance banner on every page, launch buttons pointed at ``notebooks/``, image alt text,
  "SPEC x.y" citations linked into the paper chapter).
"""
