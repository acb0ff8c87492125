"""Learning-rate schedules."""


def poly_lr(base_lr, iteration, max_iterations, power):
    """Poly decay as the original: base * (1 - i / max) ** power."""
    return base_lr * ((1.0 - float(iteration) / max_iterations) ** power)


def apply_poly_lr(optimizer, base_lr, iteration, max_iterations, power, multipliers=None):
    """Set every group's lr to poly(base_lr) times its multiplier (segmenter: head group at 10x)."""
    lr = poly_lr(base_lr, iteration, max_iterations, power)
    for k, group in enumerate(optimizer.param_groups):
        group["lr"] = lr * (multipliers[k] if multipliers else 1.0)
    return lr
