"""Training Rasa models in the Rasa environment, cached by a hash of their inputs.

The hash covers every file under the domain, the training data and the pipeline config, plus the
Rasa version, so a model is retrained exactly when something it was made from changed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from bot.errors import TrainingFailed

log = logging.getLogger(__name__)

RASA_VERSION = "3.6.21"
# The Rasa CLI with the project's fixes applied first, from the triage-rasa package the Rasa
# environment installs (rasa_side/): `python -m triage_rasa.launcher ARGS` runs `rasa ARGS`.
RASA_LAUNCHER_MODULE = "triage_rasa.launcher"


@dataclass(frozen=True)
class TrainingInputs:
    domain: Path
    config: Path
    data: tuple[Path, ...]

    @classmethod
    def default(cls, nlu_data_dir: Path) -> TrainingInputs:
        return cls(
            domain=nlu_data_dir / "domain",
            config=nlu_data_dir / "config.yml",
            data=(nlu_data_dir / "data",),
        )

    def files(self) -> list[Path]:
        found: list[Path] = []
        for root in (self.domain, self.config, *self.data):
            if root.is_dir():
                found.extend(p for p in sorted(root.rglob("*")) if p.is_file())
            elif root.is_file():
                found.append(root)
            else:
                raise TrainingFailed(f"training input {root} does not exist")
        return found

    def fingerprint(self, nlu_only: bool = False) -> str:
        digest = hashlib.sha256(f"rasa {RASA_VERSION} nlu_only={nlu_only}\n".encode())
        for path in self.files():
            digest.update(str(path.name).encode() + b"\0")
            digest.update(path.read_bytes())
            digest.update(b"\0")
        return digest.hexdigest()[:20]


def rasa_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "RASA_TELEMETRY_ENABLED": "false",
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONWARNINGS": "ignore",
            "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
        }
    )
    return env


async def run_rasa(
    rasa_python: Path, args: list[str], cwd: Path, log_file: Path
) -> tuple[int, str]:
    """Run ``rasa ARGS`` to completion; returns the exit code and the tail of its output."""
    if not rasa_python.exists():
        raise TrainingFailed(
            f"the Rasa environment is missing ({rasa_python}); run `make rasa-env` or `make run`"
        )
    cwd.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            str(rasa_python),
            "-m",
            RASA_LAUNCHER_MODULE,
            *args,
            cwd=cwd,
            env=rasa_env(),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
        )
        code = await proc.wait()
    tail = log_file.read_text(errors="replace")[-3000:]
    return code, tail


async def ensure_model(
    rasa_python: Path, inputs: TrainingInputs, models_dir: Path, *, force: bool = False
) -> Path:
    """The model for these inputs, trained only when no model with their fingerprint exists
    (each domain pack's data gives its own fingerprint, so packs share the cache safely)."""
    name = f"triage-{inputs.fingerprint()}"
    model = models_dir / f"{name}.tar.gz"
    if model.exists() and not force:
        log.info("model is up to date", extra={"model": model.name})
        return model
    started = time.monotonic()
    args = [
        "train",
        "--domain",
        str(inputs.domain),
        "--config",
        str(inputs.config),
        "--data",
        *[str(d) for d in inputs.data],
        "--out",
        str(models_dir),
        "--fixed-model-name",
        name,
    ]
    code, tail = await run_rasa(rasa_python, args, models_dir, models_dir / f"{name}.train.log")
    if code != 0 or not model.exists():
        raise TrainingFailed(f"rasa train exited with {code}:\n{tail}")
    log.info(
        "model trained",
        extra={"model": model.name, "seconds": round(time.monotonic() - started, 1)},
    )
    return model
