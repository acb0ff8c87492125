"""The methods' objectives, one module each: s4GAN (s4gan.py), the supervised baseline
(supervised.py) and the MLMT classifier (mlmt.py). A step takes an iteration's batches and returns
its logged values; everything around it (data, schedules, snapshots, resume) is engine/."""
