"""Orchestration: what runs the project's scripts as subprocesses and reads their results.

reproduce.py plans, runs and collects the paper's tables (catalog, plan, speed, running, jobs,
collect); demo.py and the studies use the demo's recipe (demo_recipe.py) and the script helpers (scripts.py)."""
