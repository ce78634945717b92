"""``skyscore``: the command-line contract (kept stable; documented here and in the README).

Exit status 0 on success; non-zero with a one-line reason on stderr otherwise. A file with some
bad rows is a success with a non-empty error report. Heavy modules are imported per command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from skyscore.errors import BadRequest, SkyscoreError
from skyscore.local.home import LocalHome

if TYPE_CHECKING:
    import numpy as np

    from skyscore.model.schema import Batch

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


HOME_HELP = (
    "local home holding models/, inbox/, predictions/ (default: $SKYSCORE_HOME, else ./.skyscore)"
)


def _home_parent() -> argparse.ArgumentParser:
    """``--home`` after the command. Its default is SUPPRESS, so a subcommand that is not given
    it leaves the value of ``--home`` given before the command (argparse would otherwise
    overwrite it with the subparser's default)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--home", default=argparse.SUPPRESS, help=HOME_HELP)
    return parent


def build_parser() -> argparse.ArgumentParser:
    """All commands and their arguments."""
    home = _home_parent()
    parser = argparse.ArgumentParser(
        prog="skyscore",
        description="Serve scikit-learn models as ONNX: train, register, score files, serve HTTP.",
        epilog="Exit status: 0 on success (a file with some bad rows included), 1 on failure, "
        "2 on usage errors. Failures print one line on stderr.",
    )
    parser.add_argument("--home", default=None, help=HOME_HELP + "; also accepted after COMMAND")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        parents=[home],
        help="train a model on labelled data and register a new version",
        description="Train on a labelled CSV/Parquet file, convert the whole pipeline to ONNX, "
        "refuse it unless ONNX matches scikit-learn within 1e-4, and register it as a new version "
        "of NAME. Promote it to 'production' only with --promote.",
    )
    train.add_argument("data", metavar="DATA", help="labelled CSV or Parquet file (or directory)")
    train.add_argument("--target", required=True, metavar="COLUMN", help="label column")
    train.add_argument("--name", required=True, metavar="NAME", help="model name")
    train.add_argument(
        "--estimator",
        choices=("logreg", "hgb", "xgboost"),
        default="hgb",
        help="default: hgb; xgboost trains on CUDA when a device is visible",
    )
    train.add_argument("--id-column", metavar="COLUMN", help="passed through to predictions")
    train.add_argument(
        "--promote", action="store_true", help="point 'production' at the new version"
    )
    train.add_argument("--seed", type=int, default=0)

    score = commands.add_parser(
        "score",
        parents=[home],
        help="score a CSV, JSON Lines, JSON or Parquet file",
        description="Score INPUT with the production version of a model. Writes OUTPUT (same "
        "format; default: beside INPUT as NAME.predictions.EXT), OUTPUT.errors.jsonl when any row "
        "failed, and OUTPUT.manifest.json. On a terminal, stderr shows rows scored so far.",
    )
    score.add_argument("input", metavar="INPUT")
    score.add_argument("--model", required=True, metavar="NAME")
    score.add_argument(
        "--version", default="production", help="version or alias (default: production)"
    )
    score.add_argument("--output", metavar="OUTPUT")

    serve = commands.add_parser(
        "serve",
        parents=[home],
        help="run the local runtime: HTTP API and inbox watcher",
        description="Serve /v1/models/{name}/predict, the Open Inference Protocol (/v2/...) and "
        "/openapi.json, and score files dropped into HOME/inbox/ into HOME/predictions/.",
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--model", default=None, help="model for files dropped straight into inbox/")

    promote = commands.add_parser("promote", parents=[home], help="point 'production' at VERSION")
    promote.add_argument("name", metavar="NAME")
    promote.add_argument("version", metavar="VERSION")
    promote.add_argument("--reason", default="manual promotion")

    rollback = commands.add_parser(
        "rollback", parents=[home], help="point 'production' back at its previous version"
    )
    rollback.add_argument("name", metavar="NAME")
    rollback.add_argument("--reason", default="manual rollback")

    models = commands.add_parser("models", parents=[home], help="list models, versions and aliases")
    models.add_argument("--json", action="store_true", help="machine-readable output")

    retrain = commands.add_parser(
        "retrain",
        parents=[home],
        help="start a retraining job for NAME now (subject to the retraining policy)",
        description="Ask the retraining policy to train NAME on the labelled data under "
        "HOME/training/NAME/. The policy refuses while a job is in flight, during the cool-down, "
        "past the daily cap, or with too little new data, and says why. With --wait, the "
        "candidate is then checked by the quality gate and promoted or rejected.",
    )
    retrain.add_argument("name", metavar="NAME")
    retrain.add_argument("--wait", action="store_true", help="wait for the job and judge it")
    retrain.add_argument("--timeout", type=float, default=900.0, help="seconds --wait waits")

    report = commands.add_parser(
        "report",
        parents=[home],
        help="write an HTML report for a scored file or a model's latest promotion decision",
        description="With MANIFEST (a scored file's OUTPUT.manifest.json): a drift report "
        "beside it. With --model NAME: a report of NAME's latest promotion decision.",
    )
    report.add_argument("manifest", metavar="MANIFEST", nargs="?")
    report.add_argument("--model", metavar="NAME")
    report.add_argument("--output", metavar="HTML")

    commands.add_parser(
        "demo",
        parents=[home],
        help="train, register, serve and score end to end on the local runtime",
    )
    return parser


def cmd_train(args: argparse.Namespace) -> int:
    """Train, register, optionally promote."""
    from skyscore.training.train import TrainConfig, train

    home = LocalHome.resolve(args.home).ensure()
    config = TrainConfig(
        data=args.data,
        target=args.target,
        name=args.name,
        estimator=args.estimator,
        id_column=args.id_column,
        seed=args.seed,
    )
    result = train(config, log=lambda m: print(f"  {m}", file=sys.stderr))
    registry = home.registry()
    card = registry.register(result.card, result.onnx_bytes, reason="skyscore train")
    print(f"registered {card.name} version {card.version}")
    print("  held-out: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(card.metrics.items())))
    if args.promote:
        registry.promote(card.name, card.version, reason="skyscore train --promote")
        print(f"promoted {card.name} version {card.version} to production")
    return EXIT_OK


def default_output_path(source: Path) -> Path:
    """``data.csv`` → ``data.predictions.csv`` beside it (``.tar.gz``-style suffixes kept whole)."""
    suffixes = "".join(source.suffixes[-1:])
    stem = source.name[: len(source.name) - len(suffixes)] if suffixes else source.name
    return source.with_name(f"{stem}.predictions{suffixes}")


class ScoreProgress:
    """``skyscore score``'s progress line on a terminal: rows scored so far and the rate, about
    once a second, rewritten in place (a large file otherwise says nothing for minutes)."""

    def __init__(
        self, stream: TextIO, *, every: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stream = stream
        self.every = every
        self.clock = clock
        self.started = self.last = clock()
        self.rows = 0
        self.shown = False

    def observe(self, batch: Batch, probabilities: np.ndarray) -> None:
        """Count a scored chunk; redraw the line when ``every`` seconds have passed."""
        self.rows += len(batch)
        now = self.clock()
        if now - self.last < self.every:
            return
        self.last = now
        rate = self.rows / max(now - self.started, 1e-9)
        self.stream.write(f"\r  scored {self.rows:,} rows so far ({rate / 1e3:,.0f}k rows/s)")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        """End the line, if one was drawn."""
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def cmd_score(args: argparse.Namespace) -> int:
    """Score one file with a registered model."""
    from skyscore.monitoring.batch import score_file
    from skyscore.monitoring.drift import summary

    home = LocalHome.resolve(args.home)
    predictor = home.registry().get_predictor(args.model, args.version)
    source = Path(args.input)
    output = Path(args.output) if args.output else default_output_path(source)
    progress = ScoreProgress(sys.stderr) if sys.stderr.isatty() else None
    try:
        report, drift = score_file(
            source, output, predictor, observers=[progress] if progress else []
        )
    finally:
        if progress is not None:
            progress.close()
    print(
        f"scored {report.rows_scored:,} of {report.rows_read:,} rows with "
        f"{predictor.name} v{predictor.version} -> {output}"
    )
    if report.rows_failed:
        print(f"  {report.rows_failed:,} bad rows reported in {output}.errors.jsonl")
    print(f"  {summary(drift)}")
    print(f"  manifest: {output}.manifest.json")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the local runtime until interrupted."""
    from skyscore.local.runtime import LocalRuntime

    home = LocalHome.resolve(args.home).ensure()
    runtime = LocalRuntime(home.root, host=args.host, port=args.port, default_model=args.model)
    runtime.start()
    print(f"skyscore serving {runtime.url} (inbox: {home.inbox}); Ctrl-C stops", file=sys.stderr)
    try:
        runtime.wait()
    except KeyboardInterrupt:
        pass
    finally:
        runtime.stop()
    return EXIT_OK


def cmd_promote(args: argparse.Namespace) -> int:
    """Point production at a version."""
    registry = LocalHome.resolve(args.home).registry()
    registry.promote(args.name, args.version, reason=args.reason)
    print(f"promoted {args.name} version {args.version} to production")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    """Point production back at its previous version."""
    registry = LocalHome.resolve(args.home).registry()
    version = registry.rollback(args.name, reason=args.reason)
    print(f"rolled {args.name} production back to version {version}")
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    """List models, versions, aliases."""
    registry = LocalHome.resolve(args.home).registry()
    listing: dict[str, Any] = {}
    for name in registry.list_models():
        listing[name] = {
            "versions": registry.list_versions(name),
            "aliases": registry.aliases(name),
        }
    if args.json:
        print(json.dumps(listing, indent=2))
        return EXIT_OK
    if not listing:
        print("no models yet: try `skyscore train` or `skyscore demo`")
    for name, info in listing.items():
        aliases = ", ".join(f"{a} -> {v}" for a, v in sorted(info["aliases"].items())) or "none"
        print(f"{name}: versions {', '.join(info['versions'])}; aliases: {aliases}")
    return EXIT_OK


def cmd_retrain(args: argparse.Namespace) -> int:
    """Ask the policy for a job; optionally wait and judge the candidate."""
    from skyscore.lifecycle.retrain import local_controller

    home = LocalHome.resolve(args.home).ensure()
    controller, runner = local_controller(home)
    decision = controller.consider(args.name, "manual", reason="skyscore retrain")
    print(f"{decision.action}: {decision.reason}")
    if decision.action != "started" or not args.wait or decision.job_id is None:
        return EXIT_OK if decision.action in ("started", "skipped") else EXIT_FAILED
    runner.wait(decision.job_id, timeout=args.timeout)
    outcome = controller.complete(decision.job_id)
    print(f"{outcome.action}: {outcome.reason}")
    return EXIT_OK if outcome.action in ("promoted", "rejected") else EXIT_FAILED


def cmd_report(args: argparse.Namespace) -> int:
    """Write a batch or promotion report."""
    from skyscore.monitoring.report import write_report
    from skyscore.monitoring.reporting import batch_report_for, promotion_report_for

    home = LocalHome.resolve(args.home)
    if bool(args.manifest) == bool(args.model):
        raise BadRequest("give either MANIFEST or --model NAME")
    if args.manifest:
        manifest = Path(args.manifest)
        html = batch_report_for(manifest, home.registry())
        default = manifest.with_name(manifest.name.removesuffix(".manifest.json") + ".report.html")
    else:
        html = promotion_report_for(args.model, home.registry())
        default = home.root / "reports" / f"{args.model}-promotion.html"
    path = write_report(Path(args.output) if args.output else default, html)
    print(f"report: {path}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """The guided end-to-end demo."""
    from skyscore.local.demo import run_demo

    return run_demo(LocalHome.resolve(args.home))


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "train": cmd_train,
    "score": cmd_score,
    "serve": cmd_serve,
    "promote": cmd_promote,
    "rollback": cmd_rollback,
    "models": cmd_models,
    "retrain": cmd_retrain,
    "report": cmd_report,
    "demo": cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``skyscore`` script."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except SkyscoreError as error:
        print(f"skyscore {args.command}: {error.detail}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, ValueError) as error:
        print(f"skyscore {args.command}: {error}", file=sys.stderr)
        return EXIT_FAILED
    except RecursionError:  # msgspec's decoders past ~10,000 levels of nesting: the input's doing
        print(
            f"skyscore {args.command}: the input is nested too deeply to decode "
            "(thousands of levels of arrays or objects)",
            file=sys.stderr,
        )
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
