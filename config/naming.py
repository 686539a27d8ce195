"""Run names: the readable parts the flags declare, and a short hash of every other recipe flag."""

from __future__ import annotations

import argparse
import hashlib
import json

from config.flags import build_parser, flag_table
from config.registry import RECIPE
from config.validation import validate

# Recipe flags left out of the configuration hash: paths (the same file can be named from
# another folder; --model_id names the file by default, and the data fingerprint guards a resume).
NOT_HASHED = ("root_path", "data_path")
HASH_ORDER = 10.5  # the hash's place in the run name: after the seed, before --des


def config_hash(args: argparse.Namespace) -> str:
    """Six hex digits of the recipe flags that the readable name leaves out, where they differ
    from their defaults ('' when none does): runs that differ in --dropout, --norm, --optimizer,
    ... get folders of their own, while a new flag with a default leaves every name as it was.
    Stable across Python sessions (sha1 of sorted JSON)."""
    parser = build_parser()
    reference = parser.parse_args(
        ["--step", str(args.step), "--model", args.model]
    )  # defaults resolved as validate() does
    validate(parser, reference)
    unnamed = [
        dest
        for dest, flag in flag_table().items()
        if flag.role == RECIPE and flag.name is None and dest not in NOT_HASHED
    ]
    changed = {dest: getattr(args, dest) for dest in unnamed if getattr(args, dest) != getattr(reference, dest)}
    if not changed:
        return ""
    return hashlib.sha1(json.dumps(changed, sort_keys=True, default=str).encode()).hexdigest()[:6]


def run_name(args: argparse.Namespace, plan, ii: int) -> str:
    """Runs that differ in any name part never overwrite each other. With --target_batch_size
    the name holds the target, not the steps, so the same run continues on another number of
    processes; without it, a run of several processes says how many (its effective batch differs).
    Every other recipe flag goes into a short hash (``config_hash``). ``plan``: the accumulation
    plan (its ``steps`` and ``world_size``)."""
    steps = plan.steps if plan.world_size == 1 else f"{plan.steps}_np{plan.world_size}"  # the resolved layout
    values = {**vars(args), "gradient_accumulation_steps": steps}
    parts = []
    for dest, flag in flag_table().items():
        if flag.name is None:
            continue
        shows = flag.name.shows(args) if flag.name.shows else values[dest] is not None and values[dest] is not False
        if shows:
            parts.append((flag.name.order, flag.name.fmt.format(values[dest])))
    digest = config_hash(args)
    if digest:
        parts.append((HASH_ORDER, f"h{digest}"))
    return "_".join([*(text for _, text in sorted(parts, key=lambda part: part[0])), str(ii)])
