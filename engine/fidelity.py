"""`--fidelity original|fixed`: one switch for every numerical quirk of the original code.

`original` (default) reproduces the code behind the paper's numbers, quirks included; `fixed`
corrects all of them. Each quirk also has its own flag, which overrides the profile.
"""

# flag -> value under each profile (a script sets only the flags it has); the Context mean differs
# between the original's two trainers. MLMT's: output_roll = how the background column reached the
# front of its output files; unlabeled_restart = the original re-created its unlabeled iterator at every
# epoch, so when an epoch (a pass over the labeled images) is shorter than a pass over the unlabeled
# ones (at 1/8: 83 of 116 batches) the end of every unlabeled shuffle was never used. adam_mode: D's Adam
# of the PyTorch each trainer was written for (0.4 in 2019, 1.x in 2022), which differ in where eps enters.
PROFILES = {
    "original": {"aspp_branches": 2, "sgd_mode": "legacy", "d_real_norm": "labeled", "mlmt_fusion": "multiply",
                 "context_train_mean": {"train_s4GAN": "reversed", "train_s4GAN_wrn38": "reversed", "train_full": "rgb"},
                 "val_protocol": "original",
                 "output_roll": "flat", "unlabeled_restart": "epoch",
                 "adam_mode": {"train_s4GAN": "legacy", "train_s4GAN_wrn38": "standard"}},
    "fixed": {"aspp_branches": 4, "sgd_mode": "standard", "d_real_norm": "own", "mlmt_fusion": "mask",
              "context_train_mean": "rgb", "val_protocol": "all", "output_roll": "per-row",
              "unlabeled_restart": "exhausted", "adam_mode": "standard"},
}


def apply_profile(args, script):
    """Fill every quirk flag left unset (None) from the --fidelity profile."""
    profile = PROFILES[args.fidelity]
    for name, value in profile.items():
        if hasattr(args, name) and getattr(args, name) is None:
            setattr(args, name, value[script] if isinstance(value, dict) else value)
    return args
