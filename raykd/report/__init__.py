"""`raykd report`: paper-style tables and figures of one pipeline invocation, read from MLflow alone.

MLflow is the source of truth (not the node folders), so a report can be made anywhere the tracking
server answers, of runs trained on another machine. One concept a file:

  source.py   which tracking store, experiment and pipeline parent run (and the errors when not found)
  collect.py  the parent's node runs (cached ones included), as plain records
  groups.py   seed replicates folded into one row: mean +/- sample std
  tables.py   the table as text, markdown, CSV and booktabs LaTeX
  curves.py   validation top-1 per epoch from MLflow's metric history
  tsne.py     t-SNE of a student's penultimate features, from its logged checkpoint
  build.py    writes the folder and logs it to the parent run under report/
"""

from raykd.report.build import Report, ReportOptions, make_report, print_report

__all__ = ["Report", "ReportOptions", "make_report", "print_report"]
