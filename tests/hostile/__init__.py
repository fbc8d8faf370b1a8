"""Hostile inputs for every verb: the corpus (``corpus.py``), how one case runs (``runner.py``), the writer of
the figures in docs/ROBUSTNESS.md (``report.py``) and a script that writes the corpus to a folder
(``make_corpus.py``). Everything is generated; no binary file is kept in the repository."""
