"""posesuite entry point: ``python run.py [task=train|eval|summary] [overrides...]``.

Bad input (a data file, a record, a checkpoint, a config value) and a diverged training end with
exit code 2 and one line on stderr that names what is wrong; HYDRA_FULL_ERROR=1 shows the
traceback instead. Other failures keep Hydra's report with the traceback.
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig

import posesuite.config  # noqa: F401  (registers the OmegaConf resolvers used by conf/)

PROGRAM = "run.py"
log = logging.getLogger(PROGRAM)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from posesuite.tasks import run_task

    try:
        return run_task(cfg)
    except Exception as err:
        message = user_error_message(err)
        if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.error(message)  # also into the run's log file
        print(f"{PROGRAM}: error: {message}", file=sys.stderr)
        sys.exit(2)


def user_error_message(err: BaseException) -> str | None:
    """The one-line message of an error caused by the user's input, or None for other errors.

    The errors posesuite raises for bad input are ValueErrors (DataError, SkeletonError, a
    checkpoint of another model) and OSErrors (missing files), plus a diverged training; Hydra
    wraps those raised while building an object from config in an InstantiationException.
    """
    from posesuite.lit.callbacks import TrainingDiverged
    from posesuite.lit.module import NonFinitePredictions

    if isinstance(err, InstantiationException) and err.__cause__ is not None:
        err = err.__cause__
    if not isinstance(err, ValueError | OSError | TrainingDiverged | NonFinitePredictions):
        return None
    # One line, even for multi-line library messages.
    return " ".join(str(err).split()) or type(err).__name__


if __name__ == "__main__":
    main()
