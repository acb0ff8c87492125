"""Every flag of the original scripts, parsed by their own parsers from an empty command line,
against ours under --fidelity original: the same option exists, with the same default, except for
the differences on purpose listed here (and in docs/original.md, "Flags")."""
import pytest

import evaluate
import train_full
import train_mlmt
import train_s4GAN
import train_s4GAN_wrn38
from data.voc import DEFAULT_LISTS
from model import MODEL_ALIASES
from tests.crosscheck.conftest import run_original, with_our_flags

pytestmark = pytest.mark.original
SCRIPTS = {"train_s4GAN": train_s4GAN, "train_full": train_full, "train_s4GAN_wrn38": train_s4GAN_wrn38,
           "train_mlmt": train_mlmt, "evaluate": evaluate}
# (script or "*", option): why ours differs
ON_PURPOSE = {
    ("train_s4GAN_wrn38", "--model"): "the original's default DeepLab is not what its WRN-38 script builds (always "
                                      "DeepLabv3+ on WRN-38); ours names that model",
    ("*", "--num-workers"): "the original's loaders ignored the flag (4 workers written in the code); ours uses it, "
                            "default min(4, available cores)",
    ("train_mlmt", "--workers"): "default min(4, available cores) instead of 4: no oversubscription on small "
                                 "machines; the number of workers changes no number here (each item draws its own "
                                 "random numbers)",
    ("train_s4GAN_wrn38", "--restore-from"): "the original's default named the ResNet-101 file, which its WRN-38 "
                                             "model never loads; ours names the WRN-38 ImageNet file it loads",
    ("evaluate", "--restore-from"): "required: the original's default is an empty path, which its torch.load refuses",
}


def normalised(script, option, value, values):
    """A parsed value in a comparable form: the crop as (H, W), the model by our registry's name
    (the original's DeepLab is deeplabv2), the VOC list ours fills in when --data-list is unset."""
    if option == "--input-size" and isinstance(value, str):
        return tuple(int(v) for v in value.split(","))
    if option == "--model" and value is not None:
        return MODEL_ALIASES.get(value.lower(), value)
    if option == "--data-list" and value is None and values.get("dataset") == "pascal_voc":
        return DEFAULT_LISTS["val" if script == "evaluate" else "train"]
    return value


def test_every_flag_of_the_original_scripts(original, tmp_path, report):
    theirs = run_original(original, "defaults", {"scripts": list(SCRIPTS)}, tmp_path)
    differ, expected_seen, compared = [], set(), 0
    for script, module in SCRIPTS.items():
        argv = ["--restore-from", "checkpoint.pth"] if script == "evaluate" else []
        ours_args = vars(module.parse_args(with_our_flags(script, argv)))
        ours_options = {o: a.dest for a in module.get_args_parser()._actions for o in a.option_strings}
        for option, dest in sorted(theirs[script]["options"].items()):
            if option == "--help":
                continue
            compared += 1
            if option not in ours_options:
                differ.append(f"{script} {option}: missing")
                continue
            a = normalised(script, option, ours_args[ours_options[option]], ours_args)
            b = normalised(script, option, theirs[script]["values"][dest], theirs[script]["values"])
            why = ON_PURPOSE.get((script, option)) or ON_PURPOSE.get(("*", option))
            if script == "evaluate" and option == "--restore-from":
                a = "required"
            if a != b:
                if why:
                    expected_seen.add((script, option))
                else:
                    differ.append(f"{script} {option}: ours {a!r}, theirs {b!r}")
    stale = [k for k in ON_PURPOSE if k[0] != "*" and k not in expected_seen]
    ok = not differ and not stale
    report("flags", f"the {compared} options of the 5 original scripts, their defaults as their parsers give them "
                    f"against ours (--fidelity original); differences on purpose: {len(expected_seen)}",
           "identical" if ok else "; ".join(differ + [f"listed but not different: {k}" for k in stale]), ok)
    assert ok, differ + stale
