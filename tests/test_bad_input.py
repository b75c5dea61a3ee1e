"""Bad input to every stage: one clear line, exit status 1, nothing written or tracked.

A catalogue of typos, absurd values and broken files, each run as the stage's own
command (the one in dvc.yaml) in a project that has been through ``dvc repro``.
Every case runs in its own copy of that project's outputs and MLflow store, so a
case that writes a file or creates a run is caught and named. The cases run two at
a time; the project is the ``small_project`` fixture of conftest.py, built once
per session and shared with test_failures.py.
"""

import collections
import concurrent.futures
import re
import shutil
import subprocess
from dataclasses import dataclass, field

import numpy as np
import pytest

from helpers import (
    HYDRA_ARGS,
    OUTPUT_FOLDERS,
    TIMEOUT,
    file_hashes,
    project_env,
    python,
    run_statuses,
)

# The small project (helpers.SMALL): 200 samples (train 107, val 27, test 66).
N_TRAIN = 107


def changed_files(before, after):
    return sorted(
        k for k in before.keys() | after.keys() if before.get(k) != after.get(k)
    )


# ---------------------------------------------------------------------------
# Broken files, placed under <case>/bad and reached through paths.* overrides


def keep_lines(n):
    def mutate(path):
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[:n]))

    return mutate


def set_cell(row, column, value):
    """Replace data row ``row`` (1-based, after the header), column ``column``."""

    def mutate(path):
        lines = path.read_text().splitlines(keepends=True)
        cells = lines[row].rstrip("\n").split(",")
        cells[column] = value
        lines[row] = ",".join(cells) + "\n"
        path.write_text("".join(lines))

    return mutate


def rename_column(old, new):
    def mutate(path):
        header, rest = path.read_text().split("\n", 1)
        names = header.split(",")
        names[names.index(old)] = new
        path.write_text(",".join(names) + "\n" + rest)

    return mutate


def cut_in_row(row):
    """Truncate the file inside data row ``row``: its first cell and half the next."""

    def mutate(path):
        lines = path.read_text().splitlines(keepends=True)
        first, second = lines[row].split(",")[:2]
        path.write_text("".join(lines[:row]) + first + "," + second[: len(second) // 2])

    return mutate


def add_input_column(path):
    """Give every row an extra input ``x3`` (0.5) before the targets."""
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        cells = line.split(",")
        cells.insert(2, "x3" if i == 0 else "0.5")
        out.append(",".join(cells))
    path.write_text("\n".join(out) + "\n")


def extra_cell(row):
    def mutate(path):
        lines = path.read_text().splitlines(keepends=True)
        lines[row] = lines[row].rstrip("\n") + ",1.0\n"
        path.write_text("".join(lines))

    return mutate


def delete(path):
    path.unlink()


def empty(path):
    path.write_bytes(b"")


def garbage(path):
    path.write_bytes(b"\xff\xfe\x00\x01 not text")


def truncate_bytes(n):
    def mutate(path):
        path.write_bytes(path.read_bytes()[:n])

    return mutate


def npz(**arrays):
    """Replace the file with an ``.npz`` of ``arrays`` (object arrays pickled)."""

    def mutate(path):
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)

    return mutate


def processed(name, mutate):
    """Copy data/processed to bad/proc and break ``name``."""

    def setup(case_dir):
        bad = case_dir / "bad" / "proc"
        shutil.copytree(case_dir / "data" / "processed", bad)
        mutate(bad / name)
        return ["paths.processed=bad/proc"]

    return setup


def raw(mutate):
    def setup(case_dir):
        bad = case_dir / "bad" / "raw"
        bad.mkdir(parents=True)
        shutil.copy2(case_dir / "data" / "raw" / "sin.csv", bad / "sin.csv")
        mutate(bad / "sin.csv")
        return ["paths.raw=bad/raw/sin.csv"]

    return setup


def best(name, mutate):
    """Copy models/best to bad/models/best and break its file ``name``."""

    def setup(case_dir):
        bad = case_dir / "bad" / "models" / "best"
        shutil.copytree(case_dir / "models" / "best", bad)
        mutate(bad / name)
        return ["paths.models=bad/models"]

    return setup


def no_best(case_dir):
    (case_dir / "bad" / "models").mkdir(parents=True)
    return ["paths.models=bad/models"]


def best_and_test(mutate_test):
    def setup(case_dir):
        return best("final.npz", lambda p: None)(case_dir) + processed(
            "test.csv", mutate_test
        )(case_dir)

    return setup


def raw_out(case_dir):
    """Send generate's output to bad/, for a case that may wrongly succeed."""
    (case_dir / "bad").mkdir()
    return ["paths.raw=bad/sin.csv"]


# ---------------------------------------------------------------------------
# The catalogue


@dataclass(frozen=True)
class Case:
    """One bad input: the stage, its overrides and the last line it must print.

    ``expect`` is the exact last line of stderr, or a regular expression when it
    starts with ``re:``. ``setup(case_dir)`` places broken files and returns more
    overrides. ``one_line``: stderr must be that line alone.
    """

    id: str
    stage: str
    overrides: tuple = ()
    expect: str = ""
    setup: object = None
    xfail: str = ""
    contains: tuple = ()
    one_line: bool = True

    def command(self, extra=()):
        module = {"train-run": "backprop_lab.train", "train": "backprop_lab.train"}
        args = ["-m", module.get(self.stage, f"backprop_lab.stages.{self.stage}")]
        if self.stage == "train":
            args.append("--multirun")
        args += HYDRA_ARGS
        # As dvc.yaml runs them; a case's own paths.models replaces the default.
        base = {
            "train": ["paths.models=models", "hydra/launcher=basic"],
            "train-run": ["paths.models=models"],
            "evaluate": ["paths.models=models"],
        }.get(self.stage, [])
        given = [*self.overrides, *extra]
        keys = {o.split("=", 1)[0] for o in given}
        base = [o for o in base if o.split("=", 1)[0] not in keys]
        return python(*args, *base, *given)


def config_error(stage, key_value, allowed):
    return f"{stage}: config error: {key_value} is not allowed: {allowed}"


def job_error(override, key_value, allowed):
    """A sweep's message: the first bad job, then the bad key."""
    # Hydra quotes some characters of an override (ftp\://x); match the key.
    key = re.escape(override.split("=", 1)[0])
    job = rf"re:sweep: config error in job (\S+ )*{key}=\S+( \S+)*: "
    return job + re.escape(f"{key_value} is not allowed: {allowed}")


GE1 = "Input should be greater than or equal to 1"
GE0 = "Input should be greater than or equal to 0"
GT0 = "Input should be greater than 0"
LT1 = "Input should be less than 1"
FINITE = "Input should be a finite number"
INTEGER = "Input should be a valid integer"
SCHEMES = "scheme must be one of sqlite, file, http, https, postgresql, mysql, mssql"
NOT_FOUND = "file not found; run the stage that writes it"
COLUMNS = "expected x1 … xd then t1 … tk"
NOT_READABLE = "not a readable weights file"
NOT_FINITE = "NaN, infinite or missing value in data row"

NUMBER = "Input should be a valid number"

CASES = [
    # generate: the data group, and any group (every stage checks the whole config)
    Case(
        "generate-n_samples-0",
        "generate",
        ("data.n_samples=0",),
        config_error("generate", "data.n_samples=0", GE1),
    ),
    Case(
        "generate-n_samples-1",
        "generate",
        ("data.n_samples=1",),
        "generate: config error: split.test_size=0.33 and split.val_size=0.2 leave "
        "(train, val, test) = (0, 0, 1) of data.n_samples=1; each needs at least "
        "1 sample",
    ),
    Case(
        "generate-noise-negative",
        "generate",
        ("data.noise=-1",),
        config_error("generate", "data.noise=-1", GE0),
    ),
    Case(
        "generate-amplitude-inf",
        "generate",
        ("data.amplitude=inf",),
        config_error("generate", "data.amplitude=inf", FINITE),
    ),
    Case(
        "generate-seed-negative",
        "generate",
        ("data.seed=-1",),
        config_error("generate", "data.seed=-1", GE0),
    ),
    Case(
        "generate-seed-float",
        "generate",
        ("data.seed=1.5",),
        config_error("generate", "data.seed=1.5", INTEGER),
    ),
    Case(
        "generate-tracking-ftp",
        "generate",
        ("tracking.uri=ftp://x",),
        config_error("generate", "tracking.uri='ftp://x'", SCHEMES),
    ),
    Case(
        "generate-lr-true",
        "generate",
        ("optim.lr=true",),
        config_error("generate", "optim.lr=True", NUMBER),
        setup=raw_out,
    ),
    # split: shares and the raw file
    Case(
        "split-test_size-0",
        "split",
        ("split.test_size=0",),
        config_error("split", "split.test_size=0", GT0),
    ),
    Case(
        "split-test_size-1",
        "split",
        ("split.test_size=1",),
        config_error("split", "split.test_size=1", LT1),
    ),
    Case(
        "split-test_size-1.5",
        "split",
        ("split.test_size=1.5",),
        config_error("split", "split.test_size=1.5", LT1),
    ),
    Case(
        "split-test_size-0.999",
        "split",
        ("split.test_size=0.999",),
        "split: config error: split.test_size=0.999 and split.val_size=0.2 leave "
        "(train, val, test) = (0, 0, 200) of data.n_samples=200; each needs at "
        "least 1 sample",
    ),
    Case(
        "split-val_size-0",
        "split",
        ("split.val_size=0",),
        config_error("split", "split.val_size=0", GT0),
    ),
    Case(
        "split-seed-negative",
        "split",
        ("split.seed=-1",),
        config_error("split", "split.seed=-1", GE0),
    ),
    Case(
        "split-raw-missing",
        "split",
        expect=f"split: bad/raw/sin.csv: {NOT_FOUND}",
        setup=raw(delete),
    ),
    Case(
        "split-raw-empty",
        "split",
        expect="split: bad/raw/sin.csv: file is empty",
        setup=raw(empty),
    ),
    Case(
        "split-raw-header-only",
        "split",
        expect="split: bad/raw/sin.csv: table has no rows",
        setup=raw(keep_lines(1)),
    ),
    Case(
        "split-raw-y1-column",
        "split",
        expect="split: bad/raw/sin.csv: columns ['x1', 'x2', 'y1', 't2']; " + COLUMNS,
        setup=raw(rename_column("t1", "y1")),
    ),
    Case(
        "split-raw-cut-in-row",
        "split",
        expect=r"re:split: bad/raw/sin\.csv: .*\brow 120\b.*",
        setup=raw(cut_in_row(120)),
    ),
    Case(
        "split-raw-two-rows",
        "split",
        expect="split: bad/raw/sin.csv: 2 rows leave (train, val, test) = (0, 1, 1) "
        "with split.test_size=0.33 and split.val_size=0.2; each needs at least 1 row",
        setup=raw(keep_lines(3)),
    ),
    # train, as the DVC stage runs it (a sweep), and as a single run
    Case(
        "train-hidden-0",
        "train",
        ("model.hidden=[0]",),
        job_error("model.hidden=[0]", "model.hidden[0]=0", GE1),
    ),
    Case(
        "train-hidden-negative",
        "train",
        ("model.hidden=[3,-1]",),
        job_error("model.hidden=[3,-1]", "model.hidden[1]=-1", GE1),
    ),
    Case(
        "train-hidden-abc",
        "train",
        ("model.hidden=abc",),
        job_error(
            "model.hidden=abc", "model.hidden='abc'", "Input should be a valid list"
        ),
    ),
    Case(
        "train-lr-0",
        "train",
        ("optim.lr=0",),
        job_error("optim.lr=0", "optim.lr=0", GT0),
    ),
    Case(
        "train-lr-negative",
        "train",
        ("optim.lr=-1",),
        job_error("optim.lr=-1", "optim.lr=-1", GT0),
    ),
    Case(
        "train-lr-nan",
        "train",
        ("optim.lr=nan",),
        job_error("optim.lr=nan", "optim.lr=nan", FINITE),
    ),
    Case(
        "train-lr-inf",
        "train",
        ("optim.lr=inf",),
        job_error("optim.lr=inf", "optim.lr=inf", FINITE),
    ),
    Case(
        "train-lr-abc",
        "train",
        ("optim.lr=abc",),
        job_error(
            "optim.lr=abc",
            "optim.lr='abc'",
            NUMBER,
        ),
    ),
    Case(
        "train-lr-quoted",
        "train",
        ("optim.lr='0.1'",),
        job_error("optim.lr='0.1'", "optim.lr='0.1'", NUMBER),
    ),
    Case(
        "train-epochs-0",
        "train",
        ("optim.epochs=0",),
        job_error("optim.epochs=0", "optim.epochs=0", GE1),
    ),
    Case(
        "train-epochs-1.5",
        "train",
        ("optim.epochs=1.5",),
        job_error("optim.epochs=1.5", "optim.epochs=1.5", INTEGER),
    ),
    Case(
        "train-batch_size-0",
        "train",
        ("optim.batch_size=0",),
        job_error("optim.batch_size=0", "optim.batch_size=0", GE1),
    ),
    Case(
        "train-batch_size-above-train-set",
        "train",
        (f"optim.batch_size={N_TRAIN + 1}",),
        job_error(
            f"optim.batch_size={N_TRAIN + 1}",
            f"optim.batch_size={N_TRAIN + 1}",
            f"it must be at most the {N_TRAIN} training samples",
        ),
    ),
    Case(
        "train-activation-unknown",
        "train",
        ("model.activation=softmax",),
        job_error(
            "model.activation=softmax",
            "model.activation='softmax'",
            "Input should be 'sigmoid', 'tanh', 'relu' or 'identity'",
        ),
    ),
    Case(
        "train-init-unknown",
        "train",
        ("model.init=zeros",),
        job_error(
            "model.init=zeros",
            "model.init='zeros'",
            "Input should be 'uniform', 'glorot' or 'he'",
        ),
    ),
    Case(
        "train-model-seed-negative",
        "train",
        ("model.seed=-3",),
        job_error("model.seed=-3", "model.seed=-3", GE0),
    ),
    Case(
        "train-optim-seed-float",
        "train",
        ("optim.seed=0.5",),
        job_error("optim.seed=0.5", "optim.seed=0.5", INTEGER),
    ),
    Case(
        "train-engine-unknown",
        "train",
        ("optim.engine=cuda",),
        job_error(
            "optim.engine=cuda",
            "optim.engine='cuda'",
            "Input should be 'auto', 'numpy' or 'numba'",
        ),
    ),
    Case(
        "train-shuffle-maybe",
        "train",
        ("optim.shuffle=maybe",),
        job_error(
            "optim.shuffle=maybe",
            "optim.shuffle='maybe'",
            "Input should be a valid boolean",
        ),
    ),
    Case(
        "train-max_loss-0",
        "train",
        ("optim.max_loss=0",),
        job_error("optim.max_loss=0", "optim.max_loss=0", GT0),
    ),
    Case(
        "train-checkpoint-every-negative",
        "train",
        ("checkpoint.every=-1",),
        job_error("checkpoint.every=-1", "checkpoint.every=-1", GE0),
    ),
    Case(
        "train-tracking-ftp",
        "train",
        ("tracking.uri=ftp://x",),
        job_error("tracking.uri=ftp://x", "tracking.uri='ftp://x'", SCHEMES),
    ),
    Case(
        "train-sweep-one-bad-job",
        "train",
        ("optim.lr=0.01,-1",),
        "sweep: config error in job model.hidden=[3] optim.lr=-1: "
        f"{'optim.lr=-1'} is not allowed: {GT0}",
    ),
    Case(
        "train-unknown-key",
        "train",
        ("optim.lrr=1",),
        "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.",
        contains=("Could not override 'optim.lrr'.", "full_key: optim.lrr"),
        one_line=False,
    ),
    Case(
        "train-run-lr-0",
        "train-run",
        ("optim.lr=0",),
        config_error("train", "optim.lr=0", GT0),
    ),
    # train's data files (train.csv, val.csv under paths.processed)
    Case(
        "train-val-missing",
        "train",
        expect=f"sweep: bad/proc/val.csv: {NOT_FOUND}",
        setup=processed("val.csv", delete),
    ),
    Case(
        "train-run-val-missing",
        "train-run",
        expect=f"train: bad/proc/val.csv: {NOT_FOUND}",
        setup=processed("val.csv", delete),
    ),
    Case(
        "train-train-empty",
        "train",
        expect="sweep: bad/proc/train.csv: file is empty",
        setup=processed("train.csv", empty),
    ),
    Case(
        "train-val-header-only",
        "train",
        expect="sweep: bad/proc/val.csv: table has no rows",
        setup=processed("val.csv", keep_lines(1)),
    ),
    Case(
        "train-train-y1-column",
        "train",
        expect="sweep: bad/proc/train.csv: columns ['x1', 'x2', 'y1', 't2']; "
        + COLUMNS,
        setup=processed("train.csv", rename_column("t1", "y1")),
    ),
    Case(
        "train-train-non-numeric",
        "train",
        expect="sweep: bad/proc/train.csv: non-numeric values in columns ['x2']",
        setup=processed("train.csv", set_cell(5, 1, "abc")),
    ),
    Case(
        "train-train-nan",
        "train",
        expect=f"sweep: bad/proc/train.csv: {NOT_FINITE} 7",
        setup=processed("train.csv", set_cell(7, 2, "nan")),
    ),
    Case(
        "train-val-inf",
        "train",
        expect=f"sweep: bad/proc/val.csv: {NOT_FINITE} 3",
        setup=processed("val.csv", set_cell(3, 0, "inf")),
    ),
    Case(
        "train-train-cut-in-row",
        "train",
        expect=r"re:sweep: bad/proc/train\.csv: .*\brow 50\b.*",
        setup=processed("train.csv", cut_in_row(50)),
    ),
    Case(
        "train-train-binary",
        "train",
        expect=r"re:sweep: bad/proc/train\.csv: not a CSV table \(.+\)",
        setup=processed("train.csv", garbage),
    ),
    Case(
        "train-train-extra-cell",
        "train",
        expect="sweep: bad/proc/train.csv: not a CSV table (Error tokenizing data. "
        "C error: Expected 4 fields in line 5, saw 5)",
        setup=processed("train.csv", extra_cell(4)),
    ),
    # evaluate: the best model's files and the test set
    Case(
        "evaluate-config-init",
        "evaluate",
        ("model.init=zeros",),
        config_error(
            "evaluate",
            "model.init='zeros'",
            "Input should be 'uniform', 'glorot' or 'he'",
        ),
    ),
    Case(
        "evaluate-tracking-enabled-yes",
        "evaluate",
        ("tracking.enabled=yes",),
        config_error(
            "evaluate", "tracking.enabled='yes'", "Input should be a valid boolean"
        ),
    ),
    Case(
        "evaluate-final-missing",
        "evaluate",
        expect=f"evaluate: bad/models/best/final.npz: {NOT_FOUND}",
        setup=best("final.npz", delete),
    ),
    Case(
        "evaluate-final-corrupt",
        "evaluate",
        expect=f"evaluate: bad/models/best/final.npz: {NOT_READABLE} (File is not "
        "a zip file)",
        setup=best("final.npz", truncate_bytes(100)),
    ),
    Case(
        "evaluate-final-pickle",
        "evaluate",
        expect=f"evaluate: bad/models/best/final.npz: {NOT_READABLE} (Object "
        "arrays cannot be loaded when allow_pickle=False)",
        setup=best("final.npz", npz(W1=np.array([{"a": 1}, None], dtype=object))),
    ),
    Case(
        "evaluate-final-wrong-keys",
        "evaluate",
        expect="evaluate: bad/models/best/final.npz: keys ['A'] are not W1 … WL "
        "(one array per layer)",
        setup=best("final.npz", npz(A=np.ones((3, 3)))),
    ),
    Case(
        "evaluate-final-int-array",
        "evaluate",
        expect="evaluate: bad/models/best/final.npz: W1 must be a 2-D float array",
        setup=best("final.npz", npz(W1=np.ones((3, 3), dtype=int))),
    ),
    Case(
        "evaluate-final-shapes-do-not-chain",
        "evaluate",
        expect="evaluate: bad/models/best/final.npz: W2 has shape (2, 5); expected "
        "(2, 4) after W1",
        setup=best("final.npz", npz(W1=np.ones((3, 3)), W2=np.ones((2, 5)))),
    ),
    Case(
        "evaluate-final-wrong-input-width",
        "evaluate",
        expect="evaluate: data/processed/test.csv: 2 input columns; expected 3",
        setup=best("final.npz", npz(W1=np.ones((3, 4)), W2=np.ones((2, 4)))),
    ),
    Case(
        "evaluate-best-missing",
        "evaluate",
        expect="evaluate: bad/models/best: no trained model here (config.yaml "
        "missing); run the train stage",
        setup=no_best,
    ),
    Case(
        "evaluate-models-null",
        "evaluate",
        ("paths.models=null",),
        config_error(
            "evaluate",
            "paths.models=None",
            "evaluate needs the folder that holds best/ (the DVC stage passes "
            "paths.models=models)",
        ),
    ),
    Case(
        "evaluate-test-missing",
        "evaluate",
        expect=f"evaluate: bad/proc/test.csv: {NOT_FOUND}",
        setup=processed("test.csv", delete),
    ),
    Case(
        "evaluate-test-nan",
        "evaluate",
        expect=f"evaluate: bad/proc/test.csv: {NOT_FINITE} 2",
        setup=processed("test.csv", set_cell(2, 3, "nan")),
    ),
    Case(
        "evaluate-test-three-inputs",
        "evaluate",
        expect="evaluate: bad/proc/test.csv: 3 input columns; expected 2",
        setup=best_and_test(add_input_column),
    ),
]


def params():
    """The cases as pytest params; a case with a known bug is a strict xfail."""
    marks = {c.id: [pytest.mark.xfail(strict=True, reason=c.xfail)] for c in CASES}
    return [
        pytest.param(c, id=c.id, marks=marks[c.id] if c.xfail else ()) for c in CASES
    ]


@dataclass
class Outcome:
    """What a case's command did."""

    returncode: int
    stdout: str
    stderr: str
    changed: list
    sweep_started: bool
    statuses: dict = field(default_factory=dict)

    def describe(self):
        return (
            f"exit {self.returncode}\n--- stderr\n{self.stderr[-4000:]}\n"
            f"--- stdout\n{self.stdout[-2000:]}"
        )


def run_case(case, project, case_dir):
    """Copy the project's outputs and store, break what the case breaks, run it."""
    shutil.copytree(
        project,
        case_dir,
        ignore=shutil.ignore_patterns(".git", ".dvc", "src", "logs", "mlartifacts"),
    )
    extra = case.setup(case_dir) if case.setup else []
    folders = (*OUTPUT_FOLDERS, "bad")
    before = file_hashes(case_dir, folders)
    proc = subprocess.run(
        case.command(extra),
        cwd=case_dir,
        env=project_env(project),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    return Outcome(
        proc.returncode,
        proc.stdout,
        proc.stderr,
        changed_files(before, file_hashes(case_dir, folders)),
        (case_dir / "logs" / "sweep").exists(),
    )


@pytest.fixture(scope="module")
def catalogue(request, small_project, tmp_path_factory):
    """Run the selected cases, two at a time: ``{case id: Outcome}``."""
    wanted = {
        item.callspec.params["case"].id
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_bad_input"
    }
    root = tmp_path_factory.mktemp("bad-input")
    cases = [c for c in CASES if c.id in wanted]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            c.id: pool.submit(run_case, c, small_project, root / c.id) for c in cases
        }
        outcomes = {key: future.result() for key, future in futures.items()}
    for key, outcome in outcomes.items():
        outcome.statuses = run_statuses(root / key / "mlflow.db")
    return outcomes


@pytest.fixture(scope="module")
def statuses_before(small_project):
    return run_statuses(small_project / "mlflow.db")


def test_catalogue_covers_every_stage_with_30_cases():
    stages = collections.Counter(c.stage.removesuffix("-run") for c in CASES)
    assert set(stages) == {"generate", "split", "train", "evaluate"}
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.slow
@pytest.mark.parametrize("case", params())
def test_bad_input(case, catalogue, statuses_before):
    outcome = catalogue[case.id]
    lines = outcome.stderr.strip().splitlines()

    assert outcome.returncode == 1, outcome.describe()
    assert lines, outcome.describe()
    if case.expect.startswith("re:"):
        assert re.fullmatch(case.expect[3:], lines[-1]), outcome.describe()
    else:
        assert lines[-1] == case.expect, outcome.describe()
    if case.one_line:
        assert len(lines) == 1, outcome.describe()
    for text in case.contains:
        assert text in outcome.stderr, outcome.describe()
    assert "Traceback" not in outcome.stderr + outcome.stdout, outcome.describe()
    # Nothing written: no output, no broken input touched, no sweep job started.
    assert outcome.changed == []
    assert not outcome.sweep_started
    # Nothing tracked: the same runs with the same statuses, none left RUNNING.
    assert outcome.statuses == statuses_before
    assert "RUNNING" not in outcome.statuses.values()
