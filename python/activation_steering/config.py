"""GlobalConfig: class-level logging switches (SPEC 5).

Each class name ("global", "LeashLayer", "MalleableModel", "SteeringVector",
"SteeringDataset") has a verbose flag and a file-output flag. A class that was
never set explicitly follows "global"... except LeashLayer, which is chatty (it
logs on every forward) and therefore off unless set. Log files live under
`GlobalConfig.log_dir` (default ./logs, or $ACTIVATION_STEERING_LOG_DIR), one file
per class name per process start; nothing is created until something is logged.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
from pathlib import Path

CLASS_NAMES = ("global", "LeashLayer", "MalleableModel", "SteeringVector", "SteeringDataset")
_STARTED = _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"


class GlobalConfig:
    """Class-level settings; never instantiate."""

    log_dir: Path = Path(os.environ.get("ACTIVATION_STEERING_LOG_DIR", "logs"))
    _verbose: dict[str, bool] = {"global": True, "LeashLayer": False}
    _file_output: dict[str, bool] = {"global": False}

    @staticmethod
    def _check(class_name: str) -> str:
        if class_name not in CLASS_NAMES:
            raise ValueError(f"class_name must be one of {CLASS_NAMES}, got {class_name!r}")
        return class_name

    @classmethod
    def set_verbose(cls, verbose: bool, class_name: str = "global") -> None:
        cls._verbose[cls._check(class_name)] = bool(verbose)

    @classmethod
    def is_verbose(cls, class_name: str = "global") -> bool:
        cls._check(class_name)
        return cls._verbose.get(class_name, cls._verbose["global"])

    @classmethod
    def set_file_output(cls, enabled: bool, class_name: str = "global") -> None:
        cls._file_output[cls._check(class_name)] = bool(enabled)
        _LOGGERS.pop(class_name, None)  # rebuild handlers on next use

    @classmethod
    def should_log_to_file(cls, class_name: str = "global") -> bool:
        cls._check(class_name)
        return cls._file_output.get(class_name, cls._file_output["global"])

    @classmethod
    def get_file_path(cls, class_name: str = "global") -> str:
        """Where `class_name` logs go (the file is created only on the first message)."""
        cls._check(class_name)
        return str(cls.log_dir / f"{class_name}-{_STARTED}.log")


_LOGGERS: dict[str, logging.Logger] = {}


def get_logger(class_name: str) -> logging.Logger:
    """A logger for `class_name` honouring GlobalConfig (console when verbose, file when enabled)."""
    logger = _LOGGERS.get(class_name)
    if logger is None:
        logger = logging.getLogger(f"activation_steering.{class_name}")
        logger.propagate = False
        logger.handlers.clear()
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter(f"[{class_name}] %(message)s"))
        console.addFilter(lambda _rec: GlobalConfig.is_verbose(class_name))
        logger.addHandler(console)
        if GlobalConfig.should_log_to_file(class_name):
            path = Path(GlobalConfig.get_file_path(class_name))
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = logging.FileHandler(path, delay=True)
            fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logger.addHandler(fh)
        logger.setLevel(logging.INFO)
        _LOGGERS[class_name] = logger
    return logger


def log(class_name: str, message: str) -> None:
    """Log `message` for `class_name` if it is verbose or logs to a file."""
    if GlobalConfig.is_verbose(class_name) or GlobalConfig.should_log_to_file(class_name):
        get_logger(class_name).info(message)
