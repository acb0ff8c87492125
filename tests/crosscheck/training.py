"""The training comparisons shared by test_steps.py and test_wrn38_training.py: the original's loop
run on what our run recorded (run_theirs), and the comparisons of the two (see test_steps.py)."""
import numpy as np
import torch

from tests.crosscheck.common import change_difference, fmt, max_abs, norm_relative, relative, worst_of
from tests.crosscheck.conftest import run_original

ITERATIONS = 3
# What the numbers support: the two sides compute the same things in other orders (D's pooling, the
# loss reductions), which moves the last bits (the last run's worst values: docs/original.md).
LOSS_RTOL, GRAD_RTOL, CHANGE_RTOL = 1e-5, 1e-4, 1e-4


def for_the_original(float_labels):
    """Our collated batch as the original's loader gave it (its VOC loader returned float labels)."""
    def convert(batch):
        images, labels, *rest = batch
        return (images, labels.float() if float_labels else labels, *rest)
    return convert


def run_theirs(original, script, ours, argv, tmp_path, optimizers, float_labels, workdir=None, real_loaders=(),
               sorted_walk=False,
               keep=("--dataset", "--data-dir", "--data-list", "--labeled-ratio", "--split-id", "--batch-size",
                     "--batch-size-unlab", "--num-steps", "--input-size", "--learning-rate", "--learning-rate-D",
                     "--save-pred-every", "--num-classes", "--ignore-label"), extra=()):
    """The original's `script` on what our run recorded, from our initial weights."""
    torch.save(ours.initial["S"], str(tmp_path / "S_init.pth"))
    their_argv = ["--restore-from", str(tmp_path / "S_init.pth"), "--checkpoint-dir", str(tmp_path / "theirs")]
    if "D" in ours.initial:
        torch.save(ours.initial["D"], str(tmp_path / "D_init.pth"))
        their_argv += ["--restore-from-D", str(tmp_path / "D_init.pth")]
    for k, flag in enumerate(argv):
        if flag in keep:
            their_argv += [flag, argv[k + 1]]
    spec = {"script": script, "argv": their_argv + list(extra), "passes": ours.passes(for_the_original(float_labels)),
            "optimizers": optimizers, "deterministic": True, "rng_states": [o["rng"] for o in ours.iterations],
            "real_loaders": real_loaders, "workdir": workdir or str(tmp_path), "sorted_walk": sorted_walk}
    if ours.choose_thresholds:
        spec["thresholds"] = [o["threshold"] for o in ours.iterations]
    spec["resync_s"] = {o["iteration"]: {"initial": str(tmp_path / "S_init.pth"), "current": ours.iteration_file(
        o["iteration"]), "previous": ours.iteration_file(o["iteration"] - 1)} for o in ours.iterations[1:]}
    spec.update(record_dir=str(tmp_path), state_at=ours.state_at)
    return run_original(original, "train_loop", spec, tmp_path)


def worst(current, candidate):
    return max(current, candidate, key=lambda w: w[0])


def compare_training(ours, theirs, label, report, lambda_st=None, lambda_fm=None):
    """Iteration by iteration (see the module's docstring); one report row per kind of comparison."""
    keys_s = worst_of(ours.initial["S"], theirs["initial"]["S"], max_abs)
    assert keys_s[0] == 0, ("initial weights differ", keys_s)
    if "D" in ours.initial:
        assert worst_of(ours.initial["D"], theirs["initial"]["D"], max_abs)[0] == 0, "initial D differs"
    assert [t["iteration"] for t in theirs["iterations"]] == [o["iteration"] for o in ours.iterations]
    s4gan = lambda_st is not None
    losses, d_out, lrs = (0.0, None), 0.0, 0.0
    grads = {"S": (0.0, None), "D": (0.0, None)}
    changes = {"S": [0.0, None, True, 0], "D": [0.0, None, True, 0]}
    states = {"S": (0.0, None), "D": (0.0, None)}
    counts, pseudo, repeats_differ = [], [0, 0], []
    before = {"D": (ours.initial.get("D"), ours.initial.get("D"))}
    for o, t in zip(ours.iterations, theirs["iterations"]):
        i, values = o["iteration"], o["values"]
        o_heavy, t_heavy = ours.heavy(i), torch.load(t["file"], weights_only=False)
        before["S"] = (o_heavy["start_s"], o_heavy["start_s"])  # the original's S restarts from ours
        theirs_values = {"loss_ce": float(t["loss_calc"][0])}
        if s4gan:
            count = t["selected"]["count"]
            counts.append(f"{count}/{len(t['selected']['scores'])}")
            assert values["above_st"] == count, (i, values["above_st"], count)
            st_used = count > 0 and i > 0
            assert len(t["loss_calc"]) == (2 if st_used else 1)
            if count:
                ours_pseudo = o["pseudo_labels"].numpy()
                theirs_pseudo = t["selected"]["pseudo_labels"].numpy()
                pseudo[0] += int((ours_pseudo != theirs_pseudo).sum())
                pseudo[1] += ours_pseudo.size
            loss_s, loss_d = (float(v) for v in t["backward"])
            theirs_values.update(loss_st=float(t["loss_calc"][1]) if st_used else 0.0, loss_S=loss_s, loss_D=loss_d,
                                 loss_fm=lambda_fm * t["locals"]["loss_fm"])
            assert len(o["d_calls"]) == len(t["d_calls"]) == 4
            for ours_call, their_call in zip(o["d_calls"], t["d_calls"]):
                d_out = max(d_out, relative(ours_call[0], their_call[0]), relative(ours_call[1], their_call[1]))
        for name, value in theirs_values.items():
            # L_st is a mean of -log p(own argmax), near 0 for confident maps: its float32 resolution is
            # absolute, so it is compared relative to L_S, the objective it is part of
            scale = abs(theirs_values["loss_S"]) if name == "loss_st" else abs(value)
            diff = abs(values[name] - value) / scale if scale else abs(values[name])
            if diff > losses[0]:
                losses = (diff, f"{name}, iteration {i}")
        for net, key in (("S", "sgd"), ("D", "adam")):
            if key not in t:
                continue
            mine, their = o_heavy[key], t_heavy[key]
            grads[net] = worst(grads[net], worst_of(mine["grads"], their["grads"]))
            d, k, ok, by_resolution = change_difference(before[net], mine["after"], their["after"],
                                                        t[key]["repeats"], CHANGE_RTOL)
            changes[net] = [max(changes[net][0], d), k if d >= changes[net][0] else changes[net][1],
                            changes[net][2] and ok, changes[net][3] + by_resolution]
            if "state" in mine:
                states[net] = worst(states[net], worst_of(
                    {f"{n} {b}": v for n, s in mine["state"].items() for b, v in s.items()},
                    {f"{n} {b}": v for n, s in their["state"].items() for b, v in s.items()}, norm_relative))
            before[net] = (mine["after"], their["after"])
            lrs = max(lrs, max_abs(o[key]["lr"], t[key]["lr"]))
        del o_heavy, t_heavy
        if o["sgd"]["repeats"] != t["sgd"]["repeats"]:
            repeats_differ.append(i)
    buffers = {k: v for k, v in ours.final["S"].items() if "running" in k}
    bn = worst_of(buffers, {k: theirs["final"]["S"][k] for k in buffers})
    n, listed = len(ours.iterations), ours.iterations[0]["sgd"]["repeats"]
    rows = [(("losses L_ce, L_fm, L_S, L_D, each relative to itself, L_st to L_S; self-trained count ("
              + ", ".join(counts) + ")" if s4gan else
              "the loss L_ce") + f", {n} iterations" + (f" (worst {losses[1]})" if losses[1] else ""),
             losses[0], losses[0] <= LOSS_RTOL)]
    if s4gan:
        rows.append((f"self-training pseudo-labels: pixels that differ of {pseudo[1]}", pseudo[0], pseudo[0] == 0))
        rows.append(("D's outputs (scores, features) in its 4 calls per iteration", d_out, d_out <= LOSS_RTOL))
    for net in grads:
        if grads[net][1] is None:
            continue
        tensors = len(ours.iterations[0]["sgd" if net == "S" else "adam"]["repeats"])
        rows.append((f"every gradient of {net} ({tensors} tensors, worst {grads[net][1]})", grads[net][0],
                     grads[net][0] <= GRAD_RTOL))
    rows.append((f"how many times S's optimizer lists each tensor ({sum(listed.values())} listings of "
                 f"{len(listed)} tensors)", f"differs at iterations {repeats_differ}" if repeats_differ else "identical",
                 not repeats_differ))
    rows.append(("learning rates of every group at each step (poly, head 10x)", lrs, lrs == 0))
    for net, what in (("S", "SGD over the original's lists"), ("D", "Adam")):
        worst_change, key, ok, by_resolution = changes[net]
        if key is None:
            continue
        note = (f"; {by_resolution} above {CHANGE_RTOL:g} within the float32 resolution of the weights"
                if by_resolution else "")
        rows.append((f"the change each step made to every tensor of {net} ({what}), ||ours - theirs|| / "
                     f"||theirs|| (worst {key}{note})", worst_change, ok))
        if states[net][1] is not None:
            kept = "momentum buffers" if net == "S" else "Adam's moments"
            rows.append((f"{net}'s optimizer state after the last step ({kept}), ||ours - theirs|| / ||theirs|| "
                         f"(worst {states[net][1]})", states[net][0], states[net][0] <= CHANGE_RTOL))
    rows.append(("S's BN running statistics after the last iteration (train-mode BN)", bn[0], bn[0] <= LOSS_RTOL))
    for compared, value, ok in rows:
        report(label, compared, value if isinstance(value, str) else fmt(value), ok)
    assert all(ok for _, _, ok in rows), [r for r in rows if not r[2]]


def compare_loaders(ours, theirs, label, report, numbers):
    """Each training loader of the original (its options as created, its restarts as called) against
    our stream of the same role: batch size, drop_last, pool, batches per epoch, restart iterations.
    `numbers`: {their loader number: our stream's position in draw order}."""
    differences = []
    for k, ours_k in numbers.items():
        options, stream = theirs["loader_options"][k], ours.streams[ours_k]
        pool = theirs["sampler_indices"][options["sampler"]] if options["sampler"] is not None else None
        size = len(pool) if pool is not None else len(stream.sampler)
        their_length = size // options["batch_size"] if options["drop_last"] else -(-size // options["batch_size"])
        ours_restarts = [o["iteration"] for a, o in zip(ours.iterations, ours.iterations[1:])
                         if o["epochs"][ours_k] != a["epochs"][ours_k]]
        their_restarts = [c for c in theirs["iter_calls"][k] if c is not None]
        row = {"batch size": (stream.batch_size, options["batch_size"]),
               "drop_last": (stream.loader.drop_last, options["drop_last"]),
               "shuffled": (True, options["shuffle"] or options["sampler"] is not None),
               "batches per epoch": (len(stream.loader), their_length),
               "restarts at iterations": (ours_restarts, their_restarts)}
        if pool is not None:
            row["pool"] = (sorted(stream.sampler.indices.tolist()), sorted(np.asarray(pool).tolist()))
        differences += [f"loader {k} {what}: ours {a}, theirs {b}" for what, (a, b) in row.items() if a != b]
    restarts = {k: [c for c in theirs["iter_calls"][k] if c is not None] for k in numbers}
    ok = not differences
    report(label, f"training loaders: batch size, drop_last, shuffling, pool, batches per epoch, the iterations "
                  f"at which each restarts ({restarts})", "identical" if ok else "; ".join(differences), ok)
    assert ok, differences


