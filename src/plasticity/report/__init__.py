"""Study report: figures (PNG + SVG), a results table and an auto-written summary from a study directory.

``build_report(study_dir)`` (build.py) reads the study once into a `ReportData` (data.py: ``results.csv`` and the
run directories it records), draws each registered `Figure` (figures/: one per plot, by theme), writes the summary
(summary.py, numbers.py) and ``<study_dir>/report/index.html`` (self-contained, relative image links).
"""
