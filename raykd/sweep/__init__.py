"""Ray Tune sweeps over any field of one node (`raykd tune`): space (space.py), trials (trial.py), the live table
(progress.py), what was found (results.py, plots.py) and the orchestration (run.py)."""
