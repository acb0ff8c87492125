"""Learning-rate schedules."""


def poly_lr(base_lr, iteration, max_iterations, power):
    """Poly decay as the original: base * (1 - i / max) ** power."""
    return base_lr * ((1.0 - float(iteration) / max_iterations) ** power)


def apply_poly_lr(optimizer, base_lr, iteration, max_iterations, power):
    """Set every group's lr to poly(base_lr) times the group's `lr_mult` (the model states it: the
    segmenter's head at 10x); returns poly(base_lr)."""
    lr = poly_lr(base_lr, iteration, max_iterations, power)
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_mult"] if "lr_mult" in group else lr
    return lr
