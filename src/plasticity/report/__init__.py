"""Study report: figures (PNG + SVG), a results table and an auto-written summary from a study directory.

``build_report(study_dir)`` reads ``results.csv`` and the per-run ``analysis/*.json`` of a ``plasticity study``
directory and writes ``<study_dir>/report/index.html`` (self-contained, relative image links).
"""
