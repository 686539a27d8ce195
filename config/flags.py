"""Every flag of the runner, declared once: one function per ``--help`` group, in the order of ``--help``.

A declaration names the flag's role (``g.recipe``, ``g.layout``, ``g.run``, ``g.tsl``), its part of the
run name where it has one, and for a recipe flag added after checkpoints existed, the value older runs
had (``older_runs``). A flag whose default depends on the model is declared with ``default=None`` and
``per_model=<value for the other models>``; the models that differ say so in their ``ModelSpec``.
"""

from __future__ import annotations

import functools

from config import tsl
from config.data_flags import data
from config.defaults import AUTO_EPOCH_WINDOWS, AUTO_EPOCHS, EVAL_BATCH_SIZE, SEEDS_HEADLINE
from config.registry import Flag, FlagGroup, HelpFormatter, NamePart, OneLineParser
from config.types import (
    batches_or_auto,
    device_name,
    epochs_or_auto,
    float_in,
    int_in,
    non_negative_float,
    non_negative_int,
    on_off,
    positive_float,
    positive_int,
    size_or_auto,
)
from models import MODELS, default_models, models_where
from models.DualGAFNet import TEMPORAL_BEFORE_THE_FLAG, TEMPORAL_BRANCHES, TEMPORAL_DEFAULT
from models.layers import NORMS
from utils.losses import PRESETS, presets_help


def basic(g: FlagGroup) -> None:
    g.run(
        "--is_training",
        type=int,
        choices=(0, 1),
        default=1,
        help="1: train then test; 0: test the saved best.pt of the same run",
    )
    g.run(
        "--model_id",
        name=NamePart(0, "{}"),
        default=None,
        help="free name of the experiment, first part of the run name (default: the data file's name, or ahu)",
    )
    g.recipe(
        "--model",
        name=NamePart(1, "{}"),
        choices=list(MODELS),
        default=None,
        help="model; default: the --data format's default ("
        + ", ".join(f"{d} -> {m}" for d, m in default_models().items())
        + "); with neither flag, DualGAFNet on the built-in simulator and ResNet1D on your own data",
    )
    g.run("--des", name=NamePart(11, "{}"), default="Exp", help="free description, part of the run name")
    g.run(
        "--itr",
        type=positive_int(1000),
        default=1,
        help="repeat the experiment this many times, with seeds seed, seed+1, ...",
    )
    g.run(
        "--ensemble",
        action="store_true",
        help="with --itr K (2 or more): also test the mean class probabilities of the K repeats' best models, written "
        "to ensemble.json and ensemble_predictions.csv in the first repeat's results (apply it to new logs with "
        "--predict --checkpoint A,B,...)",
    )
    g.recipe(
        "--seed",
        name=NamePart(10, "seed{}"),
        type=non_negative_int(2**31 - 1),
        default=2021,
        help="seed for weights, sample order and dropout",
    )
    g.run("--device", type=device_name, default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N or mps")
    g.recipe("--dtype", choices=("float32", "float64"), default="float32", help="float64 is for verification runs")
    g.run(
        "--deterministic",
        action="store_true",
        help="use PyTorch's deterministic algorithms; an op that has none is reported once as a warning",
    )
    g.run(
        "--config",
        metavar="FILE",
        default=None,
        saved=False,
        help="read flag values from a TOML, YAML or JSON file (keys are flag names, e.g. batch_size = 8), or from "
        "the args.json of an earlier run; flags typed on the command line override it",
    )


def model(g: FlagGroup) -> None:
    attention = ", ".join(models_where(lambda spec: spec.attention))
    feed_forward = ", ".join(models_where(lambda spec: spec.uses_d_ff))
    statistics = models_where(lambda spec: spec.statistics_branch)
    g.recipe("--d_model", type=int_in(8, 4096), default=64, help="model width")
    g.recipe("--n_heads", type=positive_int(64), default=4, help=f"attention heads ({attention})")
    g.recipe("--e_layers", type=positive_int(64), default=2, help="encoder / graph layers (Transformer, GNN)")
    g.recipe(
        "--d_ff",
        type=int_in(1, 65_536),
        default=None,
        help=f"{feed_forward}: feed-forward width (default: 2 x --d_model); other models ignore it",
    )
    g.recipe("--patch_len", type=positive_int(100_000), default=8, help="Transformer: samples per token")
    g.recipe("--dropout", type=float_in(0.0, 0.95), default=0.1, help="dropout probability")
    g.recipe(
        "--norm",
        choices=NORMS,
        default="layer",
        help="normalisation inside models; 'batch' breaks exact accumulation (per-micro-batch statistics)",
    )
    g.recipe(
        "--fusion", choices=("gated", "concat", "add"), default="gated", help="DualGAFNet: GASF/GADF fusion per sensor"
    )
    g.recipe(
        "--window_stats",
        type=on_off,
        nargs="?",
        const=True,
        default=None,
        per_model=False,
        metavar="on|off",
        help=f"{', '.join(statistics)}: a branch on each window's per-sensor statistics (mean, std, min, max, last "
        "minus first) straight to the classifier; alone it is --window_stats on (default: "
        + ", ".join(f"{'on' if MODELS[m].defaults.get('window_stats') else 'off'} for {m}" for m in statistics)
        + ")",
    )
    g.recipe(
        "--no_temporal",
        name=NamePart(5, "notemporal"),
        action="store_true",
        help="DualGAFNet: leave out the 1-D conv branch on the raw window (only the GASF/GADF images and window "
        "statistics)",
    )
    g.recipe(
        "--temporal",
        older_runs=TEMPORAL_BEFORE_THE_FLAG,
        choices=TEMPORAL_BRANCHES,
        default=TEMPORAL_DEFAULT,
        help="DualGAFNet: its 1-D conv branch on the raw window: resnet (ResNet1D's three residual blocks, widths "
        f"d, 2d, 2d) or small (two blocks of width d, the branch of checkpoints written before this flag); default "
        f"{TEMPORAL_DEFAULT}",
    )


def training(g: FlagGroup) -> None:
    g.recipe(
        "--train_epochs",
        type=epochs_or_auto,
        default="auto",
        help=f"maximum epochs; auto: enough to pass about {AUTO_EPOCH_WINDOWS:,} training windows through the "
        f"model (12 on the built-in data), at least {AUTO_EPOCHS[0]} and at most {AUTO_EPOCHS[1]}",
    )
    g.layout(
        "--batch_size",
        name=NamePart(6, "bs{}"),
        type=size_or_auto,
        default=32,
        help="micro-batch size (samples per forward pass); auto (with --target_batch_size): the largest that fits "
        "the memory budget (CUDA: measured by a short probe; CPU: estimated), steps chosen to keep the target",
    )
    g.run(
        "--max_memory_fraction",
        type=float_in(0.0, 1.0, low_open=True),
        default=0.9,
        help="--batch_size auto: share of the GPU's memory (CPU: of the memory available now) that training may use",
    )
    g.run(
        "--max_memory_mb",
        type=positive_int(10**9),
        default=None,
        help="--batch_size auto: budget in MiB for what training adds to the weights and data (gradients, optimizer "
        "state, activations; an estimate), instead of --max_memory_fraction; on CUDA it replaces the probe",
    )
    g.recipe(
        "--learning_rate",
        name=NamePart(8, "lr{:g}"),
        type=positive_float(10.0),
        default=2e-3,
        help="initial learning rate",
    )
    g.recipe(
        "--optimizer", choices=("radam", "adamw", "sgd"), default="radam", help="optimizer (sgd uses momentum 0.9)"
    )
    g.recipe(
        "--weight_decay", type=non_negative_float(1.0), default=1e-4, help="weight decay (decoupled for radam/adamw)"
    )
    g.recipe(
        "--lr_scheduler",
        choices=("plateau", "cosine", "none"),
        default="cosine",
        help="plateau: ReduceLROnPlateau on the validation loss, once per epoch; cosine: warm-up then cosine "
        "decay, stepped once per optimizer update and sized from the real number of updates",
    )
    g.recipe(
        "--warmup_steps", type=non_negative_int(10**9), default=0, help="cosine: linear warm-up, in optimizer updates"
    )
    g.recipe(
        "--min_lr", type=non_negative_float(10.0), default=0.0, help="cosine: learning rate at the end of the schedule"
    )
    g.recipe("--lr_factor", type=float_in(0.0, 1.0, low_open=True), default=0.5, help="plateau: LR multiplier")
    g.recipe(
        "--lr_patience",
        type=non_negative_int(10_000),
        default=2,
        help="plateau: epochs without improvement before the LR drops",
    )
    g.recipe(
        "--patience",
        type=non_negative_int(100_000),
        default=8,
        help="early stopping: epochs without validation-loss improvement (0: off)",
    )
    g.recipe(
        "--monitor",
        choices=("loss", "macro_f1"),
        default="loss",
        help="validation measure for early stopping and best.pt (ReduceLROnPlateau always follows the loss)",
    )
    g.recipe(
        "--max_grad_norm",
        type=non_negative_float(),
        default=1.0,
        help="clip the gradient norm once per optimizer update, on the whole window's gradient (0: off)",
    )
    g.run(
        "--max_bad_windows",
        type=positive_int(10**6),
        default=5,
        help="abort (exit code 3) after this many consecutive accumulation windows with a non-finite loss or "
        "gradient; each such window is discarded without touching the weights",
    )
    g.recipe("--use_amp", action="store_true", help="mixed precision: CUDA fp16 with GradScaler (or bf16), CPU bf16")
    g.recipe("--amp_dtype", choices=("fp16", "bf16"), default="fp16", help="CUDA AMP dtype")
    g.run(
        "--compile",
        nargs="?",
        const="default",
        choices=("off", "default", "reduce-overhead", "max-autotune"),
        default="off",
        help="train with torch.compile (the flag alone: mode 'default'; reduce-overhead adds CUDA graphs). Shapes "
        "are kept static: the short last batch compiles once more. The first epoch pays the compilation; evaluation "
        "stays eager",
    )


def accumulation(g: FlagGroup) -> None:
    g.layout(
        "--gradient_accumulation_steps",
        name=NamePart(7, "ga{}", lambda a: a.target_batch_size is None),
        type=positive_int(100_000),
        default=None,
        help="micro-batches per optimizer update (default 1; not together with --enable_auto_gradient_accumulation)",
    )
    g.layout(
        "--enable_auto_gradient_accumulation",
        action="store_true",
        help="choose the steps from --batch_size: < 4 -> 4 steps, 4..7 -> 2, >= 8 -> 1 (not with "
        "--gradient_accumulation_steps)",
    )
    g.layout(
        "--target_batch_size",
        name=NamePart(7, "tb{}"),
        type=positive_int(10**9),
        default=None,
        help="effective batch to aim for: steps = ceil(N / (batch_size x processes)), so 1, 2 or 4 processes "
        "train the same recipe (not with --gradient_accumulation_steps or --enable_auto_gradient_accumulation)",
    )
    g.recipe(
        "--cross_epoch_accumulation",
        action="store_true",
        help="let a window carry over the epoch end instead of flushing it there",
    )
    g.run(
        "--log_grad_noise",
        action="store_true",
        help="estimate the gradient noise scale B_simple from each window's micro-batch gradients (needs >= 2 "
        "steps; one process), log it per epoch and recommend an effective batch at the end; costs one copy of the "
        "gradients",
    )


def processes(g: FlagGroup) -> None:
    g.run(
        "--dist_backend",
        choices=("auto", "gloo", "nccl"),
        default="auto",
        help="torch.distributed backend: auto is nccl on CUDA and gloo on the CPU",
    )
    g.run(
        "--dist_timeout",
        type=positive_float(86_400.0),
        default=600.0,
        help="seconds a process waits for the others in any collective before stopping with an error (exit code 4)",
    )


def loss(g: FlagGroup) -> None:
    g.recipe(
        "--loss_preset",
        name=NamePart(9, "{}"),
        choices=list(PRESETS),
        default="hvac_similar_optimized",
        help="loss preset (see above)",
    )
    g.recipe(
        "--class_weights",
        choices=("auto", "none", "balanced"),
        default="auto",
        help="balanced: n/(K*n_c) from training labels; auto: balanced when the preset asks for it or the training "
        "classes are imbalanced (largest > 1.5 x smallest), else none",
    )


def output(g: FlagGroup) -> None:
    g.run("--checkpoints", default="./checkpoints", help="folder for <run>/last.pt and best.pt")
    g.run("--results", default="./results", help="folder for <run>/metrics.json, history.csv, plots, and summary.csv")
    g.run(
        "--overwrite",
        action="store_true",
        saved=False,
        help="replace this run's earlier checkpoints and results (without it, a run whose folder holds a checkpoint "
        "is refused)",
    )
    g.run(
        "--normal_class",
        metavar="NAME",
        default=None,
        help="the fault-free class of the fault-detection report (false-alarm and detection rates); default: a class "
        "named normal (the 0 label of a --fault_inventory file)",
    )
    g.run(
        "--tensorboard",
        action="store_true",
        help="also write per-epoch scalars to <results>/<run>/tensorboard (needs: pip install tensorboard)",
    )
    g.run(
        "--resume",
        metavar="auto|PATH",
        default=None,
        saved=False,
        help="continue training from a checkpoint, also from inside an accumulation window; auto: this run's "
        "last.pt if there is one, else start fresh",
    )
    g.run(
        "--save_every_updates",
        type=non_negative_int(10**9),
        default=0,
        help="also write last.pt every this many optimizer updates (0: only at epoch ends and on Ctrl-C/SIGTERM)",
    )
    g.run(
        "--progress",
        choices=("auto", "bar", "log", "none"),
        default="auto",
        help="auto: a tqdm bar on a terminal, whole lines in a log file",
    )


def quick_checks(g: FlagGroup) -> None:
    g.run(
        "--fast_dev_run",
        type=batches_or_auto,
        nargs="?",
        const="auto",
        default=None,
        metavar="N",
        help="train N micro-batches (default: the accumulation steps, at least 2: a full window, and a flushed one "
        "when N is not a multiple of the steps) for one epoch (or --train_epochs), validate and test on N batches, "
        "write every output into a temporary folder (unless --results / --checkpoints are given), read them back and "
        "print 'smoke run passed'",
    )
    g.recipe(
        "--limit_train_batches",
        older_runs=None,
        type=positive_int(10**9),
        default=None,
        metavar="N",
        help="train on the first N micro-batches of every epoch's order; the accumulation windows and the "
        "learning-rate schedule are sized from N",
    )
    g.recipe(
        "--limit_val_batches",
        older_runs=None,
        type=positive_int(10**9),
        default=None,
        metavar="N",
        help=f"validate on N batches of {EVAL_BATCH_SIZE} windows (of the micro-batch with --batch_size auto), "
        "spread evenly over the validation split; the test stays whole",
    )
    g.run(
        "--dry_run",
        action="store_true",
        saved=False,
        help="build the data and the model, print the plan (data, model size and memory per micro-batch, loss, "
        "optimizer and schedule, accumulation, updates, run folders) and exit without training or writing anything",
    )
    g.run(
        "--print_config",
        action="store_true",
        saved=False,
        help="print this run's configuration, every flag resolved, as a TOML file that --config reads back, and exit "
        "without building or writing anything",
    )


def trained_model(g: FlagGroup) -> None:
    g.run(
        "--predict",
        action="store_true",
        saved=False,
        help="apply --checkpoint to --data_path (no labels needed) and write predictions.csv; with labels, also the "
        "metrics",
    )
    g.run(
        "--checkpoint",
        metavar="PATH",
        default=None,
        saved=False,
        help="--predict: a best.pt or last.pt written by this runner; several, comma-separated (A.pt,B.pt): an "
        "ensemble, their class probabilities averaged (same sensors, classes and window)",
    )
    g.run(
        "--export",
        choices=("torchscript", "onnx"),
        default=None,
        help="after testing (also with --is_training 0), write <checkpoints>/<run>/model.ts|.onnx and a model.json "
        "card: raw sensor windows [B, T, C] in, class probabilities out, the scaler (and GAF / graph) inside; onnx "
        "needs pip install onnx onnxscript",
    )


# (title, description, declarations), in the order of --help.
GROUPS = [
    ("basic", None, basic),
    ("data", None, data),
    ("model", None, model),
    ("training", None, training),
    (
        "accumulation",
        "micro-batches summed into one optimizer update; effective batch = batch_size x steps x processes",
        accumulation,
    ),
    (
        "processes",
        "data-parallel training: start with torchrun (e.g. torchrun --nproc_per_node 2 run.py ...); each "
        "process trains its share of every micro-batch and gradients are summed once per optimizer update",
        processes,
    ),
    ("loss", presets_help(), loss),
    ("output", None, output),
    ("quick checks", "for CI smoke runs and sweeps: see README, 'Smoke runs in CI'", quick_checks),
    (
        "use a trained model",
        "python run.py --predict --checkpoint PATH --data_path NEW.csv: the trained windowing, "
        "scaler and graph applied to new logs",
        trained_model,
    ),
    (
        "Time-Series-Library names",
        "accepted so that TSL classification scripts run: translated into the flags above; "
        "TSL flags that do not apply here (--top_k, --features, --label_len, --pred_len, --embed, augmentation flags, "
        "...) are accepted and named in one note",
        tsl.add_flags,
    ),
]


def build_parser() -> OneLineParser:
    parser = OneLineParser(
        prog="run.py",
        description="Train a fault classifier on multivariate HVAC sensor windows, with exact gradient accumulation. "
        f"With no flags: {SEEDS_HEADLINE} on the built-in AHU simulator.",
        formatter_class=HelpFormatter,
        allow_abbrev=False,  # --loss must never be taken for --loss_preset
    )
    for title, description, declare in GROUPS:
        declare(parser.group(title, description))
    return parser


@functools.cache
def flag_table() -> dict[str, Flag]:
    """dest -> Flag for every flag."""
    return build_parser().flags


def flags_with_role(role: str) -> tuple[str, ...]:
    return tuple(dest for dest, flag in flag_table().items() if flag.role == role)
