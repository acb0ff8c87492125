"""Frozen configuration dataclasses filled from parsed flags."""
from dataclasses import fields


def from_flags(cls, args, **given):
    """The dataclass `cls` with each field taken from the flag of the same name, unless `given`."""
    return cls(**{f.name: given[f.name] if f.name in given else getattr(args, f.name) for f in fields(cls)})
