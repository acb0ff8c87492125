"""`--fidelity original|fixed`: one switch for every numerical quirk of the original code.

`original` (default) reproduces the code behind the paper's numbers, quirks included; `fixed`
corrects all of them. Each quirk also has its own flag, which overrides the profile.
"""

# flag -> value under each profile; the Context mean differs between the original's two trainers.
PROFILES = {
    "original": {"aspp_branches": 2, "sgd_mode": "legacy", "d_real_norm": "labeled", "mlmt_fusion": "multiply",
                 "context_train_mean": {"train_s4GAN": "reversed", "train_full": "rgb"}, "val_protocol": "original"},
    "fixed": {"aspp_branches": 4, "sgd_mode": "standard", "d_real_norm": "own", "mlmt_fusion": "mask",
              "context_train_mean": "rgb", "val_protocol": "all"},
}


def apply_profile(args, script):
    """Fill every quirk flag left unset (None) from the --fidelity profile."""
    profile = PROFILES[args.fidelity]
    for name, value in profile.items():
        if hasattr(args, name) and getattr(args, name) is None:
            setattr(args, name, value[script] if isinstance(value, dict) else value)
    return args
