"""The paper's tables as sweeps of the ordinary scripts (reproduce.py), one module per job:

- catalog: the tables on offer (methods, fractions, the original README's flags, the paper's numbers);
- plan: the runs of a table, their commands and their state on disk;
- speed: seconds per iteration (benchmarks/RESULTS.md, a calibration, the command line);
- running: the plan shown, and run one run after another;
- jobs: job scripts for Slurm or a shell;
- collect: the Markdown table and the plot, from the runs' result files.

A table is methods x labeled fractions x splits. One run = one training command and one
evaluation. "s4GAN + MLMT" trains the MLMT classifier and evaluates the s4GAN run of the same
fraction and split with `evaluate.py --with-mlmt`. This package only builds command lines, runs them
as subprocesses and reads the files they write: it adds no training code.
"""
