"""Adding a model and a recipe flag it reads takes one model file, one ModelSpec and one flag declaration.

The demonstration: a model (tests/stem_model.py) is trained while the flag does not exist yet; then
``--stem_kernel`` is declared, with the value older runs had (``older_runs=3``). Nothing else changes:
run names keep their folder unless the flag is set, the older checkpoint resumes at that value, and
the model sees the flag's value.
"""

import pytest
import torch

from config import flags
from config.naming import config_hash, run_name
from config.types import int_in
from config.validation import validate
from exp.accumulation import plan_accumulation
from exp.exp import Exp
from models import MODELS, ModelSpec
from tests.conftest import TINY
from tests.test_resume import interrupt_after
from utils.errors import UserError
from utils.seed import seed_everything
from utils.signals import Interrupted

FLAGS = ("--model", "StemNet", "--device", "cpu", "--batch_size", "4", "--train_epochs", "2", "--patience", "0")


@pytest.fixture
def stem_net(monkeypatch):
    """The new model's one declaration."""
    monkeypatch.setitem(MODELS, "StemNet", ModelSpec("tests.stem_model", "Classification"))
    flags.flag_table.cache_clear()
    yield
    flags.flag_table.cache_clear()


def declare_stem_kernel(monkeypatch):
    """The new flag's one declaration, in the model group of --help."""
    model_group = flags.model

    def model_with_stem_kernel(g):
        model_group(g)
        g.recipe("--stem_kernel", older_runs=3, type=int_in(1, 15), default=3, help="StemNet: its first kernel size")

    groups = [(title, text, model_with_stem_kernel if declare is model_group else declare)
              for title, text, declare in flags.GROUPS]  # fmt: skip
    monkeypatch.setattr(flags, "GROUPS", groups)
    flags.flag_table.cache_clear()


def arguments(tmp, *extra):
    parser = flags.build_parser()
    args = parser.parse_args([*TINY, *FLAGS, *extra, "--checkpoints", str(tmp / "ckpt"), "--results", str(tmp / "res")])
    validate(parser, args)
    return args


def name(args):
    return run_name(args, plan_accumulation(args.batch_size, None, False, None), 0)


def test_a_new_recipe_flag_needs_only_its_declaration_and_the_model_code(tmp_path, stem_net, monkeypatch):
    before = arguments(tmp_path)
    setting, digest = name(before), config_hash(before)
    seed_everything(before.seed)
    first = Exp(before, None)
    interrupt_after(first, 3)  # an older run, stopped inside its first epoch
    with pytest.raises(Interrupted):
        first.train(setting)
    checkpoint = torch.load(tmp_path / "ckpt" / setting / "last.pt", weights_only=True)
    assert "stem_kernel" not in checkpoint["args"]

    declare_stem_kernel(monkeypatch)
    assert name(arguments(tmp_path)) == setting  # the default keeps the folder
    assert name(arguments(tmp_path, "--stem_kernel", "3")) == setting
    other = arguments(tmp_path, "--stem_kernel", "5")  # set: a run of its own, told apart by the hash alone
    assert config_hash(other) != digest and name(other) == setting.replace(digest, config_hash(other))
    assert Exp(other, None).model.stem.kernel_size == (5,)  # the model reads it

    with pytest.raises(UserError, match="without --stem_kernel: pass --stem_kernel 3 to continue it"):
        Exp(arguments(tmp_path, "--stem_kernel", "5", "--resume", str(tmp_path / "ckpt" / setting / "last.pt")),
            None).train(setting)  # fmt: skip
    resumed = Exp(arguments(tmp_path, "--resume", "auto"), None)
    resumed.train(setting)  # the older checkpoint continues at the value older runs had
    assert len(resumed.state.history) == 2 and resumed.state.updates > checkpoint["updates"]
    assert resumed.model.stem.kernel_size == (3,)
