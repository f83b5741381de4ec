"""The one-command pipeline: data, training runs, showcase notebooks and Table 1.

    python -m qlib.pipeline demo [--seeds 0 1 2]              # synthetic data, "demo" preset
    python -m qlib.pipeline figures                           # the demo's figures into figures/
    python -m qlib.pipeline smoke --run-root /tmp/smoke       # the same in seconds (tests)
    python -m qlib.pipeline reproduce --root /data/stanford_cars [--seeds 0 1 2]
    python -m qlib.pipeline reproduce --dataset sop --root /data/Stanford_Online_Products

A mode's plan (`plan(...)`, a pure function) is a list of steps:

    01_data_prep         notebook: the manifest every later step reads
    warmstart            Python: the init="classifier" warm start, trained once per experiment
    02_mining_toy        notebook: the 2D toy of Fig. 2
    train <method>_seed<s>   Python: `qlib.train.train(config)`, one per method and seed
    04_evaluate          notebook, on seed 0 of the methods in `evaluate`
    03_train             notebook, once, on a finished run (it does not retrain: resume=True)
    05_table1            notebook: Table 1 and the paired differences from the run files

`run_pipeline(steps, ...)` runs them on `workers` processes side by side, each step as soon as
the steps it needs are done (notebooks one at a time, beside trainings), and stops at the
first failure with a `PipelineError` naming the step (and for a notebook the cell). A CPU
training sets its own torch threads (TrainConfig.threads, 1 in the demo and smoke presets,
recorded in config.json), so a run's numbers do not depend on how many runs share the machine;
a GPU run of the paper preset keeps torch's count for its CPU-side metrics.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import train as qtrain
from .train import METHODS  # every row of the paper's Table 1, in its order of training here
from .train.config import check_methods
from .utils import experiment_root, load_average, repo_root, resolve_path, write_json

NOTEBOOK_DIR = repo_root() / "notebooks"
MODES = ("demo", "figures", "smoke", "reproduce")
# What `reproduce` trains on (the paper preset); its runs go to runs/paper, runs/paper-sop, ...
REPRODUCE_DATASETS = ("stanford_cars", "sop", "cub200")
SHOWCASE = "method2"  # the run notebook 03 shows (seed 0)

# Per mode: where runs go, the training preset, the data, the default seeds, which trained
# methods notebook 04 evaluates (seed 0 of each), and settings every training overrides.
_DEMO = {
    "run_root": "runs/demo",
    "preset": "demo",
    "dataset": "synthetic",
    "size": "demo",
    "smoke": False,
    "seeds": (0, 1, 2),
    "evaluate": ("random", "method1", "method2"),
    "overrides": {},
}
_MODE_SETTINGS: dict[str, dict[str, Any]] = {
    "demo": _DEMO,
    "figures": _DEMO,
    # The demo's warm start, at smoke size: the pipeline's every stage in seconds.
    "smoke": _DEMO | {"run_root": "runs/smoke", "preset": "smoke", "size": "smoke",
                      "smoke": True, "seeds": (0,), "evaluate": ("method2",),
                      "overrides": {"init": "classifier"}},
    "reproduce": _DEMO | {"run_root": "runs/paper", "preset": "paper",
                          "dataset": "stanford_cars", "size": "cars196"},
}  # fmt: skip


class PipelineError(RuntimeError):
    """A step of the pipeline failed; the message names the step (and the notebook cell)."""


@dataclass(frozen=True)
class Step:
    """One unit of work: a notebook execution (`kind` "notebook": `notebook` in notebooks/
    with its papermill `parameters`), a training run (`kind` "train": `parameters` are the
    overrides of `training_config`) or a warm start (`kind` "warmstart"). `name` is unique in a
    plan (the executed notebook's file name for notebooks); `run_dir` the training run made
    (train) or read (03, 04); `after` the names of the steps that must finish first."""

    notebook: str | None
    parameters: dict = field(hash=False)
    name: str
    run_dir: Path | None = None
    kind: str = "notebook"
    after: tuple[str, ...] = ()


def portable_path(path: str | Path) -> str:
    """`path` relative to the repository root when it lies inside it (how run folders record
    their run_root, so that a moved or cloned repository still resumes them), else absolute."""
    path = resolve_path(path)
    return str(path.relative_to(repo_root()) if path.is_relative_to(repo_root()) else path)


def training_config(parameters: dict):
    """The TrainConfig of a "train" or "warmstart" step: `config_from_preset(preset, ...)`
    with the experiment's manifest (notebook 01's) and no progress bars."""
    values = dict(parameters)
    preset = values.pop("preset")
    values.setdefault("manifest_path", qtrain.experiment_manifest(values["run_root"]))
    values.setdefault("progress", False)
    return qtrain.config_from_preset(preset, **values)


# ----------------------------------------------------------------------------------------------
# Planning
# ----------------------------------------------------------------------------------------------


def _settings(mode: str, root: str | None, methods, seeds, dataset: str | None):
    """The mode's settings (for `dataset`, when given) and the checked methods and seeds; one
    clear error for each bad input."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is unknown; expected one of {MODES}.")
    if dataset is not None and (mode != "reproduce" or dataset not in REPRODUCE_DATASETS):
        raise ValueError(
            f"dataset {dataset!r}: only reproduce takes a dataset, one of {REPRODUCE_DATASETS}."
        )
    if mode == "reproduce" and not root:
        raise ValueError(
            f"reproduce needs the {dataset or 'stanford_cars'} folder: pass --root /path/to/it."
        )
    methods = check_methods(methods) if methods else METHODS
    settings = _MODE_SETTINGS[mode]
    seeds = tuple(seeds) if seeds else settings["seeds"]
    if any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
        raise ValueError(f"seeds must be non-negative ints, got {seeds!r}.")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must differ, got {seeds!r}.")
    if dataset not in (None, settings["dataset"]):
        overrides = settings["overrides"] | {"dataset": dataset}
        settings = settings | {"dataset": dataset, "run_root": f"runs/paper-{dataset}"}
        settings |= {"overrides": overrides}
    return settings, methods, seeds


def _warm_start_group(parameters: dict) -> tuple:
    """The settings the classifier warm start depends on (`qlib.train.warmstart.classifier_key`
    without the data): runs with the same group share one classifier; () without a warm start."""
    config = training_config(parameters)
    if config.init != "classifier":
        return ()
    from .train.warmstart import CLASSIFIER_FIELDS

    return tuple(getattr(config, f) for f in (*CLASSIFIER_FIELDS, "image_size"))


def _with_warm_starts(trainings: list[Step], after: tuple[str, ...] = ()) -> tuple[list, list]:
    """One warm-start step per group of `trainings` that share a classifier (per run_root),
    and the trainings, each waiting for its group's warm start (one process trains it, not
    several at once under the cache's lock) or, without one, for `after`."""
    groups: dict[tuple, list[Step]] = {}
    for step in trainings:
        key = (step.parameters["run_root"], _warm_start_group(step.parameters))
        groups.setdefault(key, []).append(step)
    warm_starts, waiting = [], {}
    for (run_root, group), members in groups.items():
        if not group:
            continue
        methods = ", ".join(dict.fromkeys(s.parameters["method"] for s in members))
        name = f"warmstart {len(warm_starts) + 1} ({run_root}): {methods}"
        warm_starts.append(Step(None, members[0].parameters, name, kind="warmstart", after=after))
        waiting |= {s.name: (name,) for s in members}
    trainings = [dataclasses.replace(s, after=waiting.get(s.name, after)) for s in trainings]
    return warm_starts, trainings


def _training(preset: str, method: str, seed: int, run_root: Path, extra: dict) -> Step:
    """The "train" step of one method and seed; `extra`: run_root, resume and overrides."""
    parameters = {"preset": preset, "method": method, "seed": seed, **extra}
    name = f"{method}_seed{seed}"
    return Step(None, parameters, f"train {name}", run_root / name, kind="train")


def _on_run(notebook: str, run: Step, parameters: dict) -> Step:
    """Notebook `notebook` on the run a "train" step makes, once it is trained."""
    name = f"{notebook.removesuffix('.ipynb')}_{run.run_dir.name}.ipynb"
    return Step(notebook, parameters, name, run.run_dir, after=(run.name,))


def _on_first_runs(settings, firsts: dict, notebook: dict, with_root: dict) -> list:
    """Notebook 04 on the first seed's run of each method the mode evaluates, then notebook 03
    on the showcase run (resume=True: it shows a finished run, no retraining)."""
    steps = []
    for method in settings["evaluate"]:
        if method in firsts:
            run = firsts[method]
            parameters = {"run_name": run.run_dir.name, "seed": run.parameters["seed"]}
            steps.append(_on_run("04_evaluate.ipynb", run, notebook | parameters))
    if SHOWCASE in firsts:
        run = firsts[SHOWCASE]
        same = {k: v for k, v in settings["overrides"].items() if k in ("init", "dataset")}
        parameters = {"preset": settings["preset"], "method": SHOWCASE}
        parameters |= {"seed": run.parameters["seed"], "resume": True, **same, **with_root}
        steps.append(_on_run("03_train.ipynb", run, notebook | parameters))
    return steps


def plan(
    mode: str,
    run_root: str | Path | None = None,
    *,
    root: str | None = None,
    seeds: Sequence[int] | None = None,
    methods: Sequence[str] | None = None,
    coarse: str = "",
    resume: bool | None = None,
    dataset: str | None = None,
) -> list[Step]:
    """The steps of `mode` in priority order (see the module docstring). Figures go to
    `<run_root>/figures`, or to the repository's figures/ in `figures` mode. `resume` (default:
    reproduce and figures) continues interrupted runs and skips finished ones; the demo
    retrains. `dataset`: reproduce's, default stanford_cars; `coarse` "": its coarse labels."""
    settings, methods, seeds = _settings(mode, root, methods, seeds, dataset)
    first, smoke = seeds[0], settings["smoke"]
    run_root = resolve_path(run_root if run_root is not None else settings["run_root"])
    if smoke:  # where notebooks 03/04 put smoke runs: every notebook must agree
        run_root = experiment_root(run_root, smoke=True)
    figures_dir = repo_root() / "figures" if mode == "figures" else run_root / "figures"
    resume = mode in ("reproduce", "figures") if resume is None else bool(resume)
    runs_at, with_root = portable_path(run_root), {"root": root} if root else {}
    notebook = {"run_root": runs_at, "smoke": smoke, "figures_dir": portable_path(figures_dir)}
    data_parameters = {"dataset": settings["dataset"], "root": root or "", "coarse": coarse}
    data_parameters |= {"size": settings["size"], "seed": first}
    data = Step("01_data_prep.ipynb", notebook | data_parameters, "01_data_prep.ipynb")
    toy = Step("02_mining_toy.ipynb", notebook | {"seed": first}, "02_mining_toy.ipynb")
    extra = {"run_root": runs_at, "resume": resume, **settings["overrides"], **with_root}
    trainings = [
        _training(settings["preset"], m, s, run_root, extra) for s in seeds for m in methods
    ]
    warm_starts, trainings = _with_warm_starts(trainings, after=(data.name,))
    n = len(methods)
    firsts = dict(zip(methods, trainings[:n], strict=True))  # each method's run of seed `first`
    on_runs = _on_first_runs(settings, firsts, notebook, with_root)
    names = tuple(t.name for t in trainings)
    table = Step("05_table1.ipynb", dict(notebook), "05_table1.ipynb", after=names)
    # Priority order: the first seed's runs early, so that notebooks 03/04 overlap training.
    return [data, *warm_starts, toy, *trainings[:n], *on_runs, *trainings[n:], table]


# ----------------------------------------------------------------------------------------------
# Executing one step
# ----------------------------------------------------------------------------------------------


def run_finished(step: Step) -> bool:
    """Whether a "train" step's run is finished with the step's own settings and the step may
    resume it (`qlib.train.finished_as_configured`): what the pipeline skips."""
    return qtrain.finished_as_configured(training_config(step.parameters))


def declared_parameters(notebook: str | Path) -> list[str]:
    """The names assigned at the top level of a notebook's cell tagged `parameters` (read with
    `ast`: papermill's own parser skips lines whose comments hold quotes)."""
    import ast

    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise PipelineError(
            f"Notebook {Path(notebook).name} has {len(cells)} cells tagged 'parameters'; "
            "expected exactly one."
        )
    names = []
    for node in ast.parse(cells[0].source).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def _quiet_parameter_warnings(record) -> bool:
    """Drops papermill's parameter-cell warnings: its regex parser misreads comments holding
    quotes, and `declared_parameters` already checks every parameter with `ast`."""
    message = record.getMessage()
    return not message.startswith(("Unable to parse line", "Passed unknown parameter"))


def _use_this_interpreter() -> None:
    """Make the "python3" kernel the interpreter running this process (the venv), let the
    executed notebooks keep their inline figures, and make `import ipywidgets` fail in the
    kernels, as in an install without the `lab` extra: executing an `ipywidgets.interact` cell
    headless can hang nbclient forever at random (papermill issue 723, nbclient issue 312; seen
    here in notebook 02). The notebooks handle a missing ipywidgets; tqdm falls back to text."""
    import atexit
    import logging
    import shutil
    import tempfile

    bin_dir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        os.environ["PATH"] = bin_dir + os.pathsep + path
    # `make` exports MPLBACKEND=Agg for scripts; kernels should draw inline (figures are saved
    # to files either way).
    if os.environ.get("MPLBACKEND", "").lower() == "agg":
        os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    for name in ("papermill", "papermill.translators"):
        logging.getLogger(name).addFilter(_quiet_parameter_warnings)  # added once
    if not os.environ.get("QLIB_HEADLESS_WIDGETS"):
        folder = tempfile.mkdtemp(prefix="qlib-headless-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        shim = Path(folder) / "ipywidgets"
        shim.mkdir()
        message = "ipywidgets is off in pipeline kernels (headless runs draw no widgets)"
        (shim / "__init__.py").write_text(f"raise ImportError({message!r})\n")
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [folder, os.getenv("PYTHONPATH")]))
        os.environ["QLIB_HEADLESS_WIDGETS"] = folder


def _execute(step: Step, output: Path, options: dict) -> None:
    """Execute a notebook step with papermill into `output`; a failure names the cell."""
    import papermill as pm

    notebook_dir = Path(options["notebook_dir"])
    source = notebook_dir / step.notebook
    if not source.is_file():
        raise PipelineError(f"Notebook {step.notebook} does not exist in {notebook_dir}.")
    declared = declared_parameters(source)
    undeclared = sorted(set(step.parameters) - set(declared))
    if undeclared:
        raise PipelineError(
            f"Notebook {step.notebook} does not declare the parameters {undeclared} in its "
            f"'parameters' cell (it declares {sorted(declared)})."
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    name = step.name.removesuffix(".ipynb")
    try:
        pm.execute_notebook(
            str(source),
            str(output),
            parameters=step.parameters,
            kernel_name="python3",
            cwd=str(notebook_dir),
            # The kernel's own log is not the notebook's output: ipykernel 7 warns at every
            # start that its local TCP sockets are unencrypted, and may log an ERROR for the
            # interrupt at shutdown. A failing cell still fails the step with its traceback.
            extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
            **options["papermill"],
        )
    except pm.PapermillExecutionError as err:
        first_line = (str(err.evalue).strip().splitlines() or [""])[0].rstrip(".")
        source_line = next((ln for ln in err.source.splitlines() if ln.strip()), "")
        raise PipelineError(
            f"Notebook {name} failed in cell {err.cell_index} (In [{err.exec_count}], starting "
            f"{source_line.strip()!r}): {err.ename}: {first_line}. Executed copy: {output}"
        ) from err
    except Exception as err:  # kernel death, timeouts, bad parameters
        raise PipelineError(
            f"Notebook {name} could not be executed: {type(err).__name__}: "
            f"{str(err).rstrip('.')}. Executed copy: {output}"
        ) from err


def _warm_start(parameters: dict) -> None:
    """Train (or find cached) the classifier warm start exactly as `train` would."""
    from .train.warmstart import classifier_state
    from .utils import resolve_device

    config = training_config(parameters)
    classifier_state(config, qtrain.build_datasets(config), resolve_device(config.device))


def _run_step(step: Step, options: dict) -> float:
    """Execute one step (in this process); returns its wall time in seconds. A training sets its
    own torch threads (TrainConfig.threads: 1 in the demo and smoke presets)."""
    tic = time.perf_counter()
    if step.kind == "notebook":
        _execute(step, Path(options["executed_dir"]) / step.name, options)
    elif step.kind in ("train", "warmstart"):
        try:
            if step.kind == "train":
                qtrain.train(training_config(step.parameters))
            else:
                _warm_start(step.parameters)
        except Exception as err:
            raise PipelineError(
                f"Step {step.name!r} failed: {type(err).__name__}: {str(err).rstrip('.')}."
            ) from err
    else:
        raise PipelineError(f"Step {step.name!r} has an unknown kind {step.kind!r}.")
    return time.perf_counter() - tic


# ----------------------------------------------------------------------------------------------
# Scheduling the steps
# ----------------------------------------------------------------------------------------------


def default_workers() -> int:
    """Processes side by side: one per CPU core (at most 8) on a CPU, one on a GPU (a run
    there already uses the whole device)."""
    import torch

    return 1 if torch.cuda.is_available() else max(1, min(os.cpu_count() or 1, 8))


def _resumable(step: Step, steps: Sequence[Step]) -> bool:
    """A training whose run is finished as configured, or a warm start whose trainings all are."""
    if step.kind == "warmstart":
        waiting = [s for s in steps if step.name in s.after]
        return bool(waiting) and all(_resumable(s, steps) for s in waiting)
    return step.kind == "train" and run_finished(step)


class _InProcess:
    """The pool of `workers=1`: runs each step in this process as it is submitted."""

    def submit(self, work: Callable, *args) -> Future:
        future = Future()
        future.set_result(work(*args))
        return future


def _to_start(ready: list[Step], running: list[Step], workers: int) -> list[Step]:
    """The ready steps to start beside `running`: `workers` steps at most, one notebook at a
    time (kernels started in parallel processes can race for ports and hang: papermill issues
    239, 511)."""
    start = []
    for step in ready:
        if len(running) + len(start) >= workers:
            break
        if step.kind != "notebook" or all(s.kind != "notebook" for s in running + start):
            start.append(step)
    return start


def _run_steps(steps: Sequence[Step], options: dict, workers: int, echo) -> list:
    """Run `steps` on a pool of `workers` spawned processes (no fork of a threaded torch
    process; 1: in this process), each once its `after` steps are done, earliest first, finished
    runs skipped (`_resumable`); returns one record per step."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    pool = nullcontext(_InProcess())
    if workers > 1:
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_use_this_interpreter)
    label = {
        s.name: f"[{i}/{len(steps)}] {s.name.removesuffix('.ipynb')}"
        for i, s in enumerate(steps, 1)
    }
    pending, done, records, running = list(steps), set(), [], {}

    def finish(step: Step, seconds: float, status: str) -> None:
        done.add(step.name)
        records.append({"name": step.name, "kind": step.kind, "notebook": step.notebook,
                        "seconds": seconds, "status": status})  # fmt: skip
        said = "skipped, finished before" if status == "skipped" else f"{seconds:.1f} s"
        echo(f"{label[step.name]}: {said}")

    with pool as pool:
        try:
            while pending or running:
                ready = [s for s in pending if set(s.after) <= done]
                skipped = next((s for s in ready if _resumable(s, steps)), None)
                if skipped:  # which can make more steps ready
                    pending.remove(skipped)
                    finish(skipped, 0.0, "skipped")
                    continue
                for step in _to_start(ready, list(running.values()), workers):
                    pending.remove(step)
                    echo(f"{label[step.name]} ...")
                    running[pool.submit(_run_step, step, options)] = step
                if not running:
                    names = [s.name for s in pending]
                    raise PipelineError(f"steps {names} wait for steps that never ran.")
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    finish(running.pop(future), future.result(), "ran")
        except BaseException:
            for future in running:
                future.cancel()
            raise
    return records


def _report(records: list, steps, seconds: float, load_start, workers: int, echo) -> None:
    """Echo the time of each step and write them to `<run_root>/pipeline_timings.json`."""
    echo("\nElapsed per step (wall time, steps overlap when workers > 1):")
    for record in records:
        echo(f"  {record['name'].removesuffix('.ipynb'):<40} {record['seconds']:8.1f} s  "
             f"{record['status']}")  # fmt: skip
    threads = sorted(
        {training_config(s.parameters).threads for s in steps if s.kind == "train"},
        key=str,
    )  # None: torch's own count
    threads = threads[0] if len(threads) == 1 else threads
    echo(f"Total: {seconds:.1f} s ({seconds / 60:.1f} min) for {len(steps)} steps on {workers} "
         f"worker(s), torch threads per training: {threads}")  # fmt: skip
    summary = {
        "steps": records,
        "total_seconds": seconds,
        "workers": workers,
        "torch_threads_per_training": threads,
        "cpu_count": os.cpu_count(),
        "load_average_start": load_start,
        "load_average_end": load_average(),
    }
    for run_root in {s.parameters.get("run_root") for s in steps} - {None}:
        write_json(resolve_path(run_root) / "pipeline_timings.json", summary)


def run_pipeline(
    steps: Sequence[Step],
    executed_dir: str | Path,
    *,
    workers: int = 1,
    progress_bar: bool = True,
    cell_timeout: int | None = None,
    echo: Callable[[str], None] = print,
) -> list[dict]:
    """Execute `steps`, each once the steps named in its `after` are done, on `workers`
    processes, earlier steps first; executed notebooks go to `executed_dir`. A training whose
    parameters say `resume` is skipped when its run is finished. Returns one record per step
    in completion order (also written to `<run_root>/pipeline_timings.json`); raises
    `PipelineError` at the first failure (steps already running finish first), a cell running
    over `cell_timeout` seconds included."""
    from . import checks

    checks.integer("workers", workers, 1)
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise ValueError("step names must be unique within a pipeline.")
    unknown = sorted({a for s in steps for a in s.after} - set(names))
    if unknown:
        raise ValueError(f"steps wait for unknown steps {unknown}.")
    _use_this_interpreter()
    papermill = {"log_output": False, "progress_bar": progress_bar and workers == 1}
    papermill |= {"start_timeout": 120, "execution_timeout": cell_timeout}
    options = {"executed_dir": str(executed_dir), "notebook_dir": str(NOTEBOOK_DIR)}
    options["papermill"] = papermill
    start, load_start = time.perf_counter(), load_average()
    records = _run_steps(steps, options, workers, echo)
    _report(records, steps, time.perf_counter() - start, load_start, workers, echo)
    return records


def train_many(
    parameters: Sequence[dict],
    *,
    workers: int | None = None,
    echo: Callable[[str], None] = print,
) -> list[dict]:
    """Train many runs side by side (`parameters`: `training_config` overrides, each with
    `preset`, `method`, `seed`, `run_root`, optionally `run_name`, ...), the warm starts first;
    finished runs are skipped unless a run's parameters say `"resume": False`. Returns
    `run_pipeline`'s records."""
    trainings = []
    for params in parameters:
        params = {"resume": True, **params, "run_root": portable_path(params["run_root"])}
        config = training_config(params)
        run_dir = qtrain.run_dir_of(config)
        name = f"train {run_dir.parent.name}/{run_dir.name}"
        trainings.append(Step(None, params, name, run_dir, kind="train"))
    warm_starts, trainings = _with_warm_starts(trainings)
    return run_pipeline(
        warm_starts + trainings,
        executed_dir=NOTEBOOK_DIR / "executed" / "train_many",
        workers=workers or default_workers(),
        echo=echo,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qlib.pipeline",
        description="Data (01), training runs, notebooks 02-04 and Table 1 (05).",
    )
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--root", help="Stanford Cars folder (reproduce)")
    parser.add_argument("--run-root", help="experiment folder (default runs/<demo|smoke|paper>)")
    parser.add_argument("--seeds", type=int, nargs="+", help="training seeds")
    parser.add_argument("--methods", nargs="+", choices=METHODS, help="methods to train")
    parser.add_argument("--dataset", choices=REPRODUCE_DATASETS, help="reproduce: the dataset")
    parser.add_argument("--coarse", default="", help="coarse labels (default: the dataset's)")
    parser.add_argument("--workers", type=int, help="processes side by side (default: cores)")
    parser.add_argument(
        "--no-resume",
        dest="resume",
        action="store_const",
        const=False,
        help="retrain finished runs",
    )
    args = vars(parser.parse_args(argv))  # plan's arguments, and workers
    workers, mode = args.pop("workers") or default_workers(), args["mode"]
    try:
        run_pipeline(
            plan(**args),
            NOTEBOOK_DIR / "executed" / mode,
            workers=workers,
            # A hung kernel fails instead of waiting forever; on Stanford Cars notebooks 01 and
            # 04 take minutes.
            cell_timeout=3600 if mode == "reproduce" else 600,
        )
    except (PipelineError, ValueError) as err:
        print(f"\nPipeline stopped: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
