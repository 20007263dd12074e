"""NLU evaluation: train on one Rasa NLU file, test on another, report the figures users compare.

Used by ``triage eval`` (any data, any pipeline), ``triage test`` (the project's held-out files
and conversation tests) and ``bench/nlu_pipelines.py``.
"""

from __future__ import annotations

import hashlib
import re
import socket
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.config.settings import Settings
from bot.errors import TrainingFailed
from bot.nlu.rasa_http import RasaHttpClient
from bot.nlu.supervisor import RasaSupervisor
from bot.nlu.training import TrainingInputs, ensure_model, run_rasa

HELD_OUT_TARGET = 0.9  # routing accuracy per language that `triage test` requires
_ANNOTATION = re.compile(r"\[([^\]]+)\]\((?:[^)]+)\)|\[([^\]]+)\]\{[^}]+\}")


@dataclass(frozen=True)
class IntentScore:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class EvalReport:
    pipeline: str
    examples: int
    accuracy: float
    macro_f1: float
    train_s: float
    load_s: float
    parse_p50_ms: float
    parse_p95_ms: float
    per_intent: dict[str, IntentScore]
    errors: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["per_intent"] = {k: asdict(v) for k, v in self.per_intent.items()}
        return data


def load_examples(path: Path) -> list[tuple[str, str]]:
    """(text, intent) pairs of a Rasa NLU YAML file, entity annotations removed."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    pairs: list[tuple[str, str]] = []
    for block in doc.get("nlu") or []:
        if "intent" not in block:
            continue
        for line in str(block.get("examples", "")).splitlines():
            line = line.strip()
            if line.startswith("- "):
                text = _ANNOTATION.sub(lambda m: m.group(1) or m.group(2), line[2:]).strip()
                pairs.append((text, str(block["intent"])))
    return pairs


NEAR_COPY_JACCARD = 0.8


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", text.lower()))


def unseen_examples(
    tests: list[tuple[str, str]], training: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The test examples with no near-copy in the training data (word-set Jaccard < 0.8).

    Short utterances ("ciao", "yes") occur in any independently written test set; this subset
    is the stricter measure of how the model generalises.
    """
    seen = [_words(text) for text, _ in training]
    kept = []
    for text, intent in tests:
        words = _words(text)
        if not any(
            len(words & other) / len(words | other) >= NEAR_COPY_JACCARD
            for other in seen
            if words | other
        ):
            kept.append((text, intent))
    return kept


def score(pairs: list[tuple[str, str | None]]) -> tuple[float, float, dict[str, IntentScore]]:
    """Accuracy, macro F1 over the gold intents, and per-intent scores of (gold, predicted)."""
    if not pairs:
        return 0.0, 0.0, {}
    gold_count = Counter(g for g, _ in pairs)
    pred_count = Counter(p for _, p in pairs)
    hits = Counter(g for g, p in pairs if g == p)
    per: dict[str, IntentScore] = {}
    for intent in sorted(gold_count):
        tp = hits[intent]
        precision = tp / pred_count[intent] if pred_count[intent] else 0.0
        recall = tp / gold_count[intent]
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per[intent] = IntentScore(
            round(precision, 4), round(recall, 4), round(f1, 4), gold_count[intent]
        )
    accuracy = sum(hits.values()) / len(pairs)
    macro = statistics.fmean(s.f1 for s in per.values())
    return round(accuracy, 4), round(macro, 4), per


def pipeline_name(config: Path) -> str:
    doc = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    names = []
    for component in doc.get("pipeline") or []:
        name = str(component.get("name"))
        if name == "CountVectorsFeaturizer" and component.get("analyzer") == "char_wb":
            name += f"(char_wb {component.get('min_ngram', 1)}-{component.get('max_ngram', 1)})"
        names.append(name)
    return " + ".join(names)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def train_nlu(
    settings: Settings, train: Path, config: Path, out_dir: Path
) -> tuple[Path, float]:
    digest = hashlib.sha256(train.read_bytes() + config.read_bytes()).hexdigest()[:16]
    name = f"nlu-{digest}"
    started = time.monotonic()
    args = [
        "train",
        "nlu",
        "--nlu",
        str(train),
        "--config",
        str(config),
        "--out",
        str(out_dir),
        "--fixed-model-name",
        name,
    ]
    code, tail = await run_rasa(settings.rasa_python, args, out_dir, out_dir / "train.log")
    model = out_dir / f"{name}.tar.gz"
    if code != 0 or not model.exists():
        raise TrainingFailed(f"rasa train nlu exited with {code}:\n{tail}")
    return model, time.monotonic() - started


async def evaluate_model(
    settings: Settings, model: Path, tests: list[tuple[str, str]], work_dir: Path
) -> tuple[float, list[tuple[str, str | None]], list[float], list[dict[str, Any]]]:
    """Load ``model`` in a Rasa server of its own and parse every test utterance."""
    supervisor = RasaSupervisor(
        settings.rasa_python,
        model,
        free_port(),
        work_dir,
        "http://127.0.0.1:9/none",
        settings.rasa_start_timeout_s,
    )
    started = time.monotonic()
    await supervisor.start()
    load_s = time.monotonic() - started
    client = RasaHttpClient(supervisor.url, timeout_s=30)
    pairs: list[tuple[str, str | None]] = []
    latencies: list[float] = []
    errors: list[dict[str, Any]] = []
    try:
        for text, gold in tests:
            t0 = time.perf_counter()
            parse = await client.parse(text)
            latencies.append((time.perf_counter() - t0) * 1000)
            pairs.append((gold, parse.intent))
            if parse.intent != gold:
                errors.append(
                    {
                        "text": text,
                        "expected": gold,
                        "predicted": parse.intent,
                        "confidence": round(parse.confidence, 4),
                    }
                )
    finally:
        await client.close()
        await supervisor.stop()
    return load_s, pairs, latencies, errors


async def report_on(
    settings: Settings,
    model: Path,
    config: Path,
    tests: list[tuple[str, str]],
    work_dir: Path,
    train_s: float,
) -> EvalReport:
    """Load ``model`` in a Rasa server of its own, parse ``tests`` and score them."""
    load_s, pairs, latencies, errors = await evaluate_model(settings, model, tests, work_dir)
    accuracy, macro, per = score(pairs)
    return EvalReport(
        pipeline=pipeline_name(config),
        examples=len(tests),
        accuracy=accuracy,
        macro_f1=macro,
        train_s=round(train_s, 1),
        load_s=round(load_s, 1),
        parse_p50_ms=round(percentile(latencies, 0.5), 2),
        parse_p95_ms=round(percentile(latencies, 0.95), 2),
        per_intent=per,
        errors=errors,
    )


async def evaluate_files(
    settings: Settings, train: Path, test: Path, config: Path | None = None
) -> EvalReport:
    config = config or settings.nlu_data_dir / "config.yml"
    tests = load_examples(test)
    if not tests:
        raise TrainingFailed(f"{test} holds no intent examples")
    with tempfile.TemporaryDirectory(prefix="triage-eval-") as tmp:
        work = Path(tmp)
        model, train_s = await train_nlu(settings, train, config, work)
        return await report_on(settings, model, config, tests, work, train_s)


def format_report(report: EvalReport) -> str:
    lines = [
        f"pipeline:  {report.pipeline}",
        f"examples:  {report.examples}",
        f"accuracy:  {report.accuracy:.3f}    macro F1: {report.macro_f1:.3f}",
        f"train:     {report.train_s:.1f} s    load: {report.load_s:.1f} s    "
        f"parse p50/p95: {report.parse_p50_ms:.1f}/{report.parse_p95_ms:.1f} ms",
        "",
        f"{'intent':<22} {'prec':>6} {'recall':>6} {'f1':>6} {'n':>4}",
    ]
    for intent, s in report.per_intent.items():
        lines.append(f"{intent:<22} {s.precision:6.2f} {s.recall:6.2f} {s.f1:6.2f} {s.support:4d}")
    if report.errors:
        lines += ["", "misclassified:"]
        lines += [
            f"  {e['expected']:<20} -> {e['predicted']!s:<20} {e['text']}" for e in report.errors
        ]
    return "\n".join(lines)


async def run_project_tests(settings: Settings) -> int:
    """Held-out NLU evaluation per language, then the Rasa conversation tests."""
    model = await ensure_model(
        settings.rasa_python, TrainingInputs.default(settings.nlu_data_dir), settings.models_dir
    )
    failed = False
    work = settings.data_dir / "test-run"
    training = [
        example
        for path in sorted((settings.nlu_data_dir / "data").rglob("*.yml"))
        for example in load_examples(path)
    ]
    for held_out in sorted((settings.nlu_data_dir / "heldout").glob("*.yml")):
        tests = load_examples(held_out)
        config = settings.nlu_data_dir / "config.yml"
        report = await report_on(settings, model, config, tests, work, 0.0)
        unseen = await report_on(
            settings, model, config, unseen_examples(tests, training), work, 0.0
        )
        print(f"== NLU held-out: {held_out.name} ==")
        print(format_report(report))
        print(
            f"unseen subset (no near-copy in training): {unseen.examples} examples, "
            f"accuracy {unseen.accuracy:.3f}, macro F1 {unseen.macro_f1:.3f}"
        )
        print()
        failed |= min(report.accuracy, unseen.accuracy) < HELD_OUT_TARGET
    stories = settings.nlu_data_dir / "tests"
    print("== conversation tests (rasa test core) ==")
    code, tail = await run_rasa(
        settings.rasa_python,
        [
            "test",
            "core",
            "--stories",
            str(stories),
            "--model",
            str(model),
            "--out",
            str(work / "core"),
            "--fail-on-prediction-errors",
        ],
        work,
        work / "rasa-test-core.log",
    )
    summary = [ln for ln in tail.splitlines() if "Correct" in ln or "failed" in ln.lower()]
    print("\n".join(summary[-6:]) or tail[-1500:])
    print(
        "conversation tests:",
        "passed"
        if code == 0
        else f"FAILED (exit {code}; see {work / 'core' / 'failed_test_stories.yml'})",
    )
    return 1 if failed or code != 0 else 0
