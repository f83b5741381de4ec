"""Every setting of a training run in one flat dataclass, and the presets built from it.

`TrainConfig()` holds the paper's values (Section 4); docs/spec.md, "Training choices", gives
the reason for every value the paper does not state.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .. import checks
from .. import losses as qlosses
from .. import miners as qminers

QUADRUPLET_METHODS = tuple(qminers.METHODS)  # ("random", "method1", "method2")
BASELINE_METHODS = ("semihard", "lifted", "npairs", "clustering", "triplet_global")
METHODS = QUADRUPLET_METHODS + BASELINE_METHODS
INITS = ("scratch", "imagenet", "classifier")  # or a path to a weights file
DATASETS = ("synthetic", "stanford_cars", "sop", "cub200", "manifest", "folder")

# Settings an interrupted run may change when it resumes (they do not change the result).
# run_root too: the run folder is found under it however it is spelled (the pipeline records
# "runs/demo", notebook 03 passes the absolute path).
RESUME_FREE_FIELDS = frozenset(
    "resume progress device num_workers stop_after_iterations epochs eval_batch_size "
    "keep_epoch_checkpoints root manifest_path sync_timings run_root".split()
)


@dataclass
class TrainConfig:
    """Every setting of a training run. The defaults are the paper's (Section 4, docs/spec.md)."""

    # Data. A manifest CSV (written by notebook 01) is read instead of dataset/root when given.
    dataset: str = "stanford_cars"  # one of DATASETS
    root: str | None = None  # the dataset's folder (stanford_cars, sop, cub200, folder)
    coarse: str = ""  # coarse vocabulary; "": the dataset's default (Cars suffix22, CUB lastword58)
    synthetic_size: str = "demo"  # synthetic set: smoke | demo | cars196
    data_seed: int = 0  # seed of the synthetic generator
    manifest_path: str | None = None  # a manifest CSV (notebook 01's, or your own)
    cache_images: bool = False  # decode every image once into memory (small sets)
    resize_cache: str = ""  # a folder for resized copies (short side 256 at 224 px): fast JPEGs
    eval_split: str = "test"  # "test": unseen classes; "val": held-out training classes (tuning)
    # Model (Fig. 1).
    backbone: str = "resnet101"  # smallcnn | resnet18 | resnet34 | resnet50 | resnet101
    init: str = "imagenet"  # scratch | imagenet (paper) | classifier | path to a weights file
    classifier_epochs: int = 5  # init="classifier": epochs of fine-class softmax pretraining
    embedding_dim: int = 1024
    normalize: bool = True  # L2-normalise the embedding (SPEC default)
    freeze_bn: bool = False
    image_size: int | None = 224  # None: the backbone's default
    # Method and loss (eq. 3-6); baselines' settings below.
    method: str = "method2"  # one of METHODS
    warmup_epochs: int = 0  # Random quadruplets for these first epochs, then `method`
    m1: float = 0.7
    m2: float = 0.3
    t1: float = 0.7
    t2: float = 0.3
    lambda_c1: float = 0.08
    lambda_c2: float = 0.25
    lambda_g1: float = 1.0
    lambda_g2: float = 1.0
    eta: float = 1.0
    reduction: str = "sum"  # every method: sum over the batch's B units (eq. 6), or "mean"
    triplet_margin: float = 0.2  # semihard and triplet_global (FaceNet's margin)
    global_margin: float = 0.4  # t of the triplet global loss (Kumar et al. 2016)
    lambda_global: float = 1.0  # weight of the triplet global loss
    lifted_margin: float = 1.0  # alpha of Song et al. 2016
    npairs_l2_reg: float = 0.002  # lambda of Sohn 2016's L2 penalty on the raw embeddings
    clustering_margin: float = 1.0  # gamma of the structured margin (Song et al. 2017)
    clustering_refine_steps: int = 5  # rounds of Song et al. 2017's medoid refinement
    images_per_class: int = 4  # K of the class-balanced baseline batches (P classes x K)
    # Optimisation.
    optimizer: str = "sgd"  # "sgd" (paper) | "adam"
    lr: float = 3e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    # Schedule. An epoch is a fixed number of iterations.
    epochs: int = 40
    iterations_per_epoch: int | None = None  # None: ceil(valid anchors / batch_size)
    batch_size: int = 32  # B: quadruplets per iteration (4B images; baselines 4B images too)
    bank_refresh_iterations: int | None = None  # also refresh every N iterations in an epoch
    eval_every: int = 5  # epochs between evaluations (and always at the end)
    eval_at_start: bool = True  # evaluate the untrained network first (epoch 0)
    eval_batch_size: int = 256
    # Hardware.
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    num_workers: int = 0  # data-loader worker processes (kept alive for the whole run)
    threads: int | None = None  # CPU runs: torch threads during training (None: torch's own)
    amp: bool = True  # CUDA: bfloat16 autocast (float16 + GradScaler without bf16); CPU: off
    sync_timings: bool = False  # synchronise CUDA per step so time_* columns are exact
    # Run bookkeeping.
    seed: int = 0
    run_root: str = "runs/paper"  # relative paths are relative to the repository root
    run_name: str | None = None  # None: f"{method}_seed{seed}"
    resume: bool = False  # continue from checkpoints/last.pt; a finished run is not retrained
    keep_epoch_checkpoints: bool = False  # also keep checkpoints/epoch_XXX.pt
    progress: bool = True  # progress bars (never change the result)
    stop_after_iterations: int | None = None  # test hook: raise TrainingInterrupted there

    def __post_init__(self) -> None:
        _choice("method", self.method, METHODS)
        _choice("dataset", self.dataset, DATASETS)
        _choice("reduction", self.reduction, ("sum", "mean"))
        _choice("optimizer", self.optimizer, ("sgd", "adam"))
        _choice("eval_split", self.eval_split, ("test", "val"))
        # Integer settings and their least values; those typed `int | None` may be None.
        optional = {f.name for f in dataclasses.fields(self) if "None" in str(f.type)}
        for names, minimum in (
            ("embedding_dim batch_size eval_every eval_batch_size classifier_epochs", 1),
            ("iterations_per_epoch bank_refresh_iterations image_size threads", 1),
            ("stop_after_iterations", 1),
            ("epochs num_workers seed data_seed warmup_epochs clustering_refine_steps", 0),
            ("images_per_class", 2),  # a class needs a pair
        ):
            for name in names.split():
                value = getattr(self, name)
                if value is not None or name not in optional:
                    checks.integer(name, value, minimum)
        checks.number("lr", self.lr, 0.0, exclusive=True)
        if not isinstance(self.init, str) or not self.init:
            raise ValueError(
                f"init must be one of {INITS} or a weights file path, got {self.init!r}."
            )

    @property
    def name(self) -> str:
        """The run folder's name: run_name, or f"{method}_seed{seed}"."""
        return self.run_name or f"{self.method}_seed{self.seed}"

    @property
    def is_quadruplet(self) -> bool:
        return self.method in QUADRUPLET_METHODS

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        _check_fields(values)
        return cls(**values)


def check_methods(methods) -> tuple[str, ...]:
    """Some of METHODS (a pipeline's or a tuning's), or one sentence naming the unknown ones."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; expected some of {METHODS}.")
    return tuple(methods)


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {allowed}.")


def _check_fields(values: dict[str, Any]) -> None:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown TrainConfig fields {unknown}; expected some of {sorted(known)}.")


# Batch size and epochs are not in the paper; docs/spec.md ("Training choices") gives the reasons.
# The demo's and the smoke test's common ground: a small CNN on the synthetic set at 32 px, one
# torch thread (the same bits whoever launches the run; the pipeline runs two at once).
_SMALL = {
    "dataset": "synthetic",
    "cache_images": True,
    "backbone": "smallcnn",
    "image_size": 32,
    "threads": 1,
}
PRESETS: dict[str, dict[str, Any]] = {
    # The paper (TrainConfig's defaults): ResNet-101 from ImageNet weights at 224 px, SGD lr 3e-4
    # (eq. 6 summed), 32 quadruplets per iteration, 40 epochs of ceil(valid anchors / 32)
    # iterations, evaluated every 5.
    "paper": {"num_workers": 8},
    # Minutes on a 2-core CPU, from the warm start (init="classifier": the paper starts from
    # pretrained weights, not from scratch), the same for every method. Adam; each method's lr
    # comes from METHOD_SETTINGS["demo"].
    "demo": {
        **_SMALL,
        "synthetic_size": "demo",
        "init": "classifier",
        "classifier_epochs": 3,
        "embedding_dim": 128,
        "optimizer": "adam",
        "lr": 1e-3,
        "batch_size": 16,
        "epochs": 3,
        "eval_every": 3,
        "run_root": "runs/demo",
    },
    # Seconds: for tests and the notebooks' smoke switch.
    "smoke": {
        **_SMALL,
        "synthetic_size": "smoke",
        "init": "scratch",
        "classifier_epochs": 1,
        "embedding_dim": 16,
        "lr": 0.01,
        "batch_size": 4,
        "epochs": 2,
        "iterations_per_epoch": 3,
        "eval_every": 1,
        "eval_batch_size": 64,
        "run_root": "runs/smoke",
    },
}

# Per method, in every preset: Lifted Structure and N-Pairs are defined on the network's raw
# embeddings (docs/spec.md, "Baselines"), so their model does not L2-normalise.
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    m: {"normalize": False} for m in BASELINE_METHODS if not qlosses.NORMALIZED[m]
}

# Per preset and method: settings that differ by method. Applied after the preset, before the
# caller's. docs/spec.md, "Training choices", says how each learning rate was chosen.
METHOD_SETTINGS: dict[str, dict[str, dict[str, Any]]] = {
    # The paper's SGD at 3e-4 for every method: the paper's own for Random / Method 1 / Method
    # 2; for the baselines untuned here (no GPU, no Stanford Cars), the same step size under the
    # one reduction rule. `make tune PRESET=paper CARS_ROOT=...` chooses theirs.
    "paper": {},
    # Chosen on validation classes carved from the training classes (never the test classes),
    # grid 3e-4 / 1e-3 / 3e-3 / 1e-2, seeds 0 and 1, the demo's budget; remade by `make tune`
    # (runs/tune/demo/tune.md).
    "demo": {
        "random": {"lr": 1e-3},
        "method1": {"lr": 3e-4},
        "method2": {"lr": 1e-3},
        "semihard": {"lr": 1e-3},
        "lifted": {"lr": 1e-3},
        "npairs": {"lr": 1e-3},
        "clustering": {"lr": 1e-3},
        "triplet_global": {"lr": 3e-4},
    },
    "smoke": {},
}


def config_from_preset(name: str, **overrides: Any) -> TrainConfig:
    """The preset's TrainConfig with the method's defaults, the preset's settings for the method
    and `overrides` applied, in that order. An override
    equal to "" keeps the preset's value, so notebook parameters can stay flat literals."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}.")
    _check_fields(overrides)
    overrides = {k: v for k, v in overrides.items() if not (isinstance(v, str) and v == "")}
    method = overrides.get("method", PRESETS[name].get("method", TrainConfig.method))
    values = {
        **PRESETS[name],
        **METHOD_DEFAULTS.get(method, {}),
        **METHOD_SETTINGS[name].get(method, {}),
        **overrides,
    }
    if str(values.get("init", "")).lower() == "none":
        values["init"] = "scratch"
    return TrainConfig(**values)
