"""Time-Series-Library command lines: its flag names, translated into this runner's flags.

A command line copied from TSL's classification scripts (``--task_name classification --data UEA
--seq_len 96 --use_gpu True --lradj type1 ...``) trains here with only the paths and the model
name changed. Three kinds of TSL flags:

* ``ALIASES``: the same meaning under another name (``--seq_len`` is ``--step``); they are
  copied onto our flag, and a conflicting value for both is refused.
* flags with a translation of their own (``--use_gpu``/``--gpu``/``--devices`` -> ``--device``,
  ``--lradj`` -> ``--lr_scheduler``, ``--loss CE`` -> ``--loss_preset standard``,
  ``--data UEA`` -> the ``.ts`` pair named by ``--model_id``), in ``translate``;
* ``IGNORED``: forecasting, imputation or other models' settings; accepted, and one line says
  they are ignored, never silently.

``--enc_in`` and ``--num_class`` are checked against the data once it is read (``check_dims``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from config.registry import FlagGroup, typed_flags
from config.types import gpu_index
from models import MODELS
from utils.errors import UserError

# TSL name -> our flag, same meaning.
ALIASES = {"seq_len": "step", "window_step": "stride"}

# TSL flags that mean nothing for our models. Every one takes any number of values, so both
# ``--inverse`` and ``--top_k 3`` parse.
IGNORED = tuple(
    """
    features target freq label_len pred_len seasonal_patterns inverse mask_rate anomaly_ratio expand d_conv
    tv_dt tv_B tv_C use_D top_k num_kernels dec_in c_out d_layers moving_avg factor distil embed activation
    channel_independence decomp_method use_norm down_sampling_layers down_sampling_window down_sampling_method
    seg_len p_hidden_dims p_hidden_layers use_dtw augmentation_ratio jitter scaling permutation
    randompermutation magwarp timewarp windowslice windowwarp rotation spawner dtwwarp shapedtwwarp wdba discdtw
    discsdtw extra_tag node_dim gcn_depth gcn_dropout propalpha conv_channel skip_channel individual alpha top_p
    pos output_attention
    """.split()
)

LRADJ = {"cosine": "cosine", "constant": "none"}  # TSL --lradj -> our --lr_scheduler, where the meaning is the same
CROSS_ENTROPY = ("ce", "crossentropy", "cross_entropy", "crossentropyloss")
UEA = "UEA"


def add_flags(g: FlagGroup) -> None:
    """TSL's flags, in their own --help group. An alias parses its value with our flag's type, so
    the same limits apply."""
    for tsl, ours in ALIASES.items():
        kind = g.parser.flags[ours].action.type
        g.tsl(f"--{tsl}", type=kind, default=None, metavar="N", help=f"TSL name of --{ours}")
    g.tsl("--task_name", default=None, help="TSL task; only 'classification' runs here")
    g.tsl(
        "--use_gpu",
        nargs="?",
        const="true",
        default=None,
        metavar="BOOL",
        help="TSL: true picks CUDA (--device cuda:<--gpu>), false the CPU",
    )
    g.tsl("--no_use_gpu", action="store_true", help="TSL: train on the CPU (--device cpu)")
    g.tsl("--gpu", type=gpu_index, default=None, metavar="N", help="TSL: GPU index (--device cuda:N)")
    g.tsl("--gpu_type", choices=("cuda", "mps"), default=None, help="TSL: cuda or mps")
    g.tsl("--use_multi_gpu", action="store_true", help="TSL: several GPUs; here they are used with torchrun")
    g.tsl("--devices", default=None, metavar="IDS", help="TSL: GPU ids of --use_multi_gpu, e.g. 0,1")
    g.tsl(
        "--lradj", default=None, help="TSL LR schedule: cosine -> --lr_scheduler cosine; type1/2/3 have no equivalent"
    )
    g.tsl("--loss", default=None, help="TSL loss: CE -> --loss_preset standard; others are forecasting losses")
    g.tsl("--use_class_weights", action="store_true", help="TSL: --class_weights balanced")
    g.tsl("--enc_in", type=int, default=None, metavar="N", help="TSL: number of sensors, checked against the data")
    g.tsl("--num_class", type=int, default=None, metavar="N", help="TSL: number of classes, checked against the data")
    for name in IGNORED:
        g.tsl(f"--{name}", nargs="*", default=None, help=argparse.SUPPRESS)


def _truth(parser, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "y", "on"):
        return True
    if lowered in ("false", "0", "no", "n", "off"):
        return False
    parser.error(f"argument --use_gpu: expected true or false, got {text!r}")


def translate(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None, world_size: int = 1
) -> list[str]:
    """Copy TSL flags onto ours; return the notes to print (what was mapped or ignored)."""
    given = typed_flags(argv)  # for conflicts between a TSL flag and ours
    notes = []
    for tsl, ours in ALIASES.items():
        value = getattr(args, tsl)
        if value is None:
            continue
        if ours in given and getattr(args, ours) != value:
            parser.error(
                f"argument --{tsl}: is TSL's name of --{ours}, which is also given ({getattr(args, ours)} vs {value})"
            )
        setattr(args, ours, value)

    if args.task_name not in (None, "classification"):
        parser.error(
            f"argument --task_name: this runner trains classifiers only (--task_name classification), "
            f"not {args.task_name}"
        )

    device = _device(parser, args, given, notes, world_size)
    if device is not None:
        args.device = device

    if args.lradj is not None:
        if args.lradj not in LRADJ:
            parser.error(
                f"argument --lradj: TSL's {args.lradj} schedule has no equivalent here; use --lr_scheduler plateau "
                "(ReduceLROnPlateau on the validation loss), cosine (per-update warm-up + cosine) or none"
            )
        if "lr_scheduler" in given and args.lr_scheduler != LRADJ[args.lradj]:
            parser.error(
                f"argument --lradj: {args.lradj} means --lr_scheduler {LRADJ[args.lradj]}, "
                f"but --lr_scheduler {args.lr_scheduler} is given"
            )
        args.lr_scheduler = LRADJ[args.lradj]

    if args.loss is not None:
        if args.loss.lower() in CROSS_ENTROPY:
            if "loss_preset" in given and args.loss_preset != "standard":
                parser.error(
                    f"argument --loss: {args.loss} is plain cross-entropy (--loss_preset standard), "
                    f"but --loss_preset {args.loss_preset} is given"
                )
            args.loss_preset = "standard"
        else:
            notes.append(
                f"--loss {args.loss} ignored: classification trains with --loss_preset {args.loss_preset} "
                "(plain cross-entropy: --loss CE)"
            )
    if args.use_class_weights:
        if "class_weights" in given and args.class_weights != "balanced":
            parser.error(
                "argument --use_class_weights: means --class_weights balanced, "
                f"but --class_weights {args.class_weights} is given"
            )
        args.class_weights = "balanced"

    _uea_path(parser, args)

    ignored = [f"--{name}" for name in IGNORED if getattr(args, name) is not None]
    if args.d_ff is not None and (args.model is None or not MODELS[args.model].uses_d_ff):  # None: not chosen yet
        ignored.append("--d_ff")
    if ignored:
        notes.append(f"Time-Series-Library flags ignored (they do not apply to these models): {', '.join(ignored)}")
    return notes


def _device(parser, args, given: set[str], notes: list[str], world_size: int) -> str | None:
    """--use_gpu / --no_use_gpu / --gpu / --gpu_type / --use_multi_gpu --devices -> --device.
    As in TSL, --use_gpu alone means CUDA when there is one (our auto). Under torchrun every
    process takes the GPU of its LOCAL_RANK, so a GPU index becomes plain cuda."""
    tsl = [
        flag
        for flag in ("use_gpu", "no_use_gpu", "gpu", "gpu_type", "use_multi_gpu", "devices")
        if getattr(args, flag) is not None and getattr(args, flag) is not False  # --gpu 0 is given: 0 == False
    ]
    if not tsl:
        return None
    use_gpu = not args.no_use_gpu and (args.use_gpu is None or _truth(parser, args.use_gpu))
    if not use_gpu:
        device = "cpu"
    elif args.gpu_type == "mps":
        device = "mps"
    else:
        index = args.gpu
        if args.use_multi_gpu:
            ids = [part.strip() for part in (args.devices or "0").split(",") if part.strip()]
            if not all(part.isdigit() for part in ids):
                parser.error(f"argument --devices: expected GPU ids such as 0,1,2,3, got {args.devices!r}")
            index = int(ids[0]) if index is None else index
            if world_size == 1:
                notes.append(
                    "--use_multi_gpu: several GPUs train here as separate processes: "
                    f"torchrun --nproc_per_node {len(ids)} run.py ... (this process uses cuda:{index})"
                )
        elif args.devices is not None:
            notes.append("--devices ignored without --use_multi_gpu (as in Time-Series-Library)")
        if world_size > 1:
            device = "cuda"  # each process its LOCAL_RANK's GPU
        elif index is None:
            device = "auto"  # as TSL: CUDA when there is one
        else:
            device = f"cuda:{index}"
    if "device" in given and args.device != device:
        parser.error(f"argument --{tsl[0]}: asks for --device {device}, but --device {args.device} is given")
    return device


def _uea_path(parser, args) -> None:
    """--data UEA --root_path DIR --model_id NAME, or --data_path NAME_TRAIN.ts / NAME_TEST.ts: the UEA pair NAME."""
    if args.data == UEA:
        if args.data_path is not None and not args.data_path.lower().endswith(".ts"):
            parser.error(f"argument --data: UEA reads NAME_TRAIN.ts + NAME_TEST.ts, not --data_path {args.data_path}")
        if args.data_path is None:
            if args.model_id is None:
                parser.error(
                    "argument --data: UEA needs --model_id NAME "
                    "(the files are --root_path/NAME_TRAIN.ts and NAME_TEST.ts)"
                )
            args.data_path = args.model_id
        args.data = None  # the batch format follows --model
    if args.data_path is not None and args.data_path.lower().endswith(".ts"):
        stem = Path(args.data_path).name[: -len(".ts")]
        for part in ("_TRAIN", "_TEST"):
            if stem.upper().endswith(part):
                args.data_path = str(Path(args.data_path).with_name(stem[: -len(part)]))
                return
        parser.error(
            f"argument --data_path: {args.data_path}: a UEA .ts file comes as a pair NAME_TRAIN.ts + NAME_TEST.ts"
        )


def check_dims(args, channels: int, classes: int, source: str) -> None:
    """TSL's --enc_in and --num_class must match the data (here they are read from it)."""
    for flag, expected, what in (("enc_in", channels, "sensors (input channels)"), ("num_class", classes, "classes")):
        value = getattr(args, flag, None)
        if value is not None and value != expected:
            raise UserError(f"--{flag} {value}: {source} has {expected} {what}")
