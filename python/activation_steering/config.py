"""GlobalConfig and the package's logging, the standard-library way.

Every record the package emits goes to a child of ``logging.getLogger("activation_steering")``:
``activation_steering.<ClassName>`` for the class names below ("global" is the
package logger itself) and ``activation_steering.<module>`` elsewhere. Importing
the package adds only a NullHandler; records propagate to the root logger, so
``logging.basicConfig``, notebooks and pytest's caplog see them, and nothing at
INFO is shown unless asked (by configuring logging, or with ``GlobalConfig``).

``GlobalConfig`` keeps the reference library's switches on top of that:

- ``set_verbose(True, class_name)`` sets that logger to INFO and, only when no
  handler up the chain would show the records, attaches one readable stderr handler
  (``[ClassName] message``) to the package logger. That handler drops any record
  another handler on its way to the root already shows, so a line is never printed
  twice (e.g. after a later ``basicConfig``). It writes through ``tqdm.write`` so log
  lines and progress bars do not tear each other.
- ``set_file_output(True, class_name)`` adds a file handler: one file per class
  name per process start under ``GlobalConfig.log_dir`` (``./logs``, or
  ``$ACTIVATION_STEERING_LOG_DIR``), created on the first record, never on import.
- "LeashLayer" logs on every forward of a steered layer (per row: the condition
  similarity, threshold and decision), so it is off unless set explicitly; every
  other class name follows "global" until set.

What this module is not: a place for other settings, or a wrapper around
``logging`` that users must go through (plain ``logging`` calls work the same).
"""
from __future__ import annotations


import contextlib
import datetime as _dt
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from ._args import check_flag

LOGGER_NAME = "activation_steering"
CLASS_NAMES = ("global", "LeashLayer", "MalleableModel", "SteeringVector", "SteeringDataset")
#: Class names that stay quiet until set explicitly (they log per forward pass).
CHATTY = ("LeashLayer",)
_STARTED = _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"

if not any(isinstance(h, logging.NullHandler) for h in logging.getLogger(LOGGER_NAME).handlers):
    logging.getLogger(LOGGER_NAME).addHandler(logging.NullHandler())  # also added by __init__


def logger_name(class_name: str) -> str:
    """The stdlib logger name of a GlobalConfig class name ("global" is the package logger)."""
    return LOGGER_NAME if class_name == "global" else f"{LOGGER_NAME}.{class_name}"


def _class_of(record_name: str) -> str:
    """The GlobalConfig class name a logger name belongs to ("global" for every other module)."""
    if record_name.startswith(LOGGER_NAME + "."):
        head = record_name[len(LOGGER_NAME) + 1:].split(".", 1)[0]
        if head in CLASS_NAMES:
            return head
    return "global"


def _shows(handler: logging.Handler, level: int) -> bool:
    """Would `handler` output a record of `level` (ignoring filters)?"""
    return not isinstance(handler, (logging.NullHandler, _ConsoleHandler)) and handler.level <= level


def _shown_elsewhere(logger: logging.Logger | None, level: int, stop: logging.Logger | None = None) -> bool:
    """Does any handler from `logger` up to the root (or up to `stop`, exclusive) show `level`?"""
    current: logging.Logger | None = logger
    while current is not None and current is not stop:
        if any(_shows(h, level) for h in current.handlers):
            return True
        if not current.propagate:
            return False
        current = current.parent  # type: ignore[assignment]
    return False


class _ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The readable handler set_verbose attaches: ``[ClassName] message`` on stderr via tqdm.write."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._follow_stderr = stream is None  # resolve sys.stderr per record (notebooks, capsys swap it)
        self.setFormatter(logging.Formatter("[%(as_class)s] %(message)s"))
        self.addFilter(self._wanted)

    @staticmethod
    def _wanted(record: logging.LogRecord) -> bool:
        cls = _class_of(record.name)
        record.as_class = cls if cls != "global" else record.name
        if record.levelno < logging.WARNING and not GlobalConfig.is_verbose(cls):
            return False  # e.g. file output on, console off for this class
        package = logging.getLogger(LOGGER_NAME)
        # Shown by a handler between the emitting logger and the package logger, or
        # above the package logger (basicConfig, caplog): do not print it again.
        if _shown_elsewhere(logging.getLogger(record.name), record.levelno, stop=package):
            return False
        return not (package.propagate and _shown_elsewhere(package.parent, record.levelno))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            stream = sys.stderr if self._follow_stderr else self.stream
            try:
                from tqdm import tqdm

                tqdm.write(msg, file=stream)  # clears and redraws any active bar
            except ImportError:  # pragma: no cover - tqdm is a dependency
                stream.write(msg + "\n")
            self.flush()
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


class _LazyDirFileHandler(logging.FileHandler):
    """A FileHandler that creates its folder and file only when the first record arrives."""

    def __init__(self, path: Path) -> None:
        self._path = path
        super().__init__(path, delay=True, encoding="utf-8")
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def _open(self):  # type: ignore[no-untyped-def]
        self._path.parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


class GlobalConfig:
    """Class-level logging switches (never instantiated).

    Class names: "global", "LeashLayer", "MalleableModel", "SteeringVector",
    "SteeringDataset". Each maps to the logger ``activation_steering.<ClassName>``
    ("global": ``activation_steering``).

    Attributes:
        log_dir: folder of the log files (default ``./logs``, or
            ``$ACTIVATION_STEERING_LOG_DIR``); read when file output is switched on.
    """

    log_dir: Path = Path(os.environ.get("ACTIVATION_STEERING_LOG_DIR") or "logs")
    _verbose: dict[str, bool] = {}
    _file_output: dict[str, bool] = {}
    _file_handlers: dict[str, logging.FileHandler] = {}
    _console: _ConsoleHandler | None = None

    @staticmethod
    def _check(class_name: str) -> str:
        if class_name not in CLASS_NAMES:
            raise ValueError(f"class_name must be one of {CLASS_NAMES}, got {class_name!r}")
        return class_name

    @classmethod
    def set_verbose(cls, verbose: bool, class_name: str = "global") -> None:
        """Show (True) or hide (False) the INFO records of `class_name`.

        Args:
            verbose: True: the logger logs at INFO and the records are shown on
                stderr (by your own handlers when you configured logging, else by one
                readable handler added here). False: WARNING and above only.
            class_name: one of ``CLASS_NAMES``; "global" is the default of every
                class name not set explicitly (except "LeashLayer").

        Raises:
            ValueError: unknown `class_name`.
        """
        cls._verbose[cls._check(class_name)] = check_flag(verbose, "verbose")
        cls._apply()
        if verbose and cls._console is None:
            logger = logging.getLogger(logger_name(class_name))
            if not _shown_elsewhere(logger, logging.INFO):
                cls._console = _ConsoleHandler()
                logging.getLogger(LOGGER_NAME).addHandler(cls._console)

    @classmethod
    def is_verbose(cls, class_name: str = "global") -> bool:
        """Whether `class_name` was asked to show its INFO records (see set_verbose).

        Raises:
            ValueError: unknown `class_name`.
        """
        cls._check(class_name)
        if class_name in cls._verbose:
            return cls._verbose[class_name]
        if class_name in CHATTY:
            return False
        return cls._verbose.get("global", False)

    @classmethod
    def set_file_output(cls, enabled: bool, class_name: str = "global") -> None:
        """Also write `class_name`'s records to ``get_file_path(class_name)`` (True) or stop (False).

        The file (and ``log_dir``) is created on the first record, not here.

        Raises:
            ValueError: unknown `class_name`.
        """
        cls._file_output[cls._check(class_name)] = check_flag(enabled, "enabled")
        old = cls._file_handlers.pop(class_name, None)
        logger = logging.getLogger(logger_name(class_name))
        if old is not None:
            logger.removeHandler(old)
            old.close()
        if enabled:
            handler = _LazyDirFileHandler(Path(cls.get_file_path(class_name)))
            cls._file_handlers[class_name] = handler
            logger.addHandler(handler)
        cls._apply()

    @classmethod
    def should_log_to_file(cls, class_name: str = "global") -> bool:
        """Whether `class_name`'s records go to its log file.

        Raises:
            ValueError: unknown `class_name`.
        """
        cls._check(class_name)
        return cls._file_output.get(class_name, False)

    @classmethod
    def get_file_path(cls, class_name: str = "global") -> str:
        """The log file of `class_name` for this process (created only on the first record).

        Returns:
            ``<log_dir>/<class_name>-<YYYYmmdd-HHMMSS>-<pid>.log`` as a string.

        Raises:
            ValueError: unknown `class_name`.
        """
        cls._check(class_name)
        return str(cls.log_dir / f"{class_name}-{_STARTED}.log")

    @classmethod
    def _apply(cls) -> None:
        """Set each class logger's level from the switches."""
        for name in CLASS_NAMES:
            logger = logging.getLogger(logger_name(name))
            if cls.is_verbose(name) or cls.should_log_to_file(name):
                logger.setLevel(logging.INFO)
            elif name in cls._verbose or name in CHATTY:
                logger.setLevel(logging.WARNING)
            else:
                logger.setLevel(logging.NOTSET)  # follows the package logger / your configuration


GlobalConfig._apply()


def get_logger(class_name: str) -> logging.Logger:
    """The stdlib logger of a GlobalConfig class name (``activation_steering.<class_name>``).

    Raises:
        ValueError: unknown `class_name`.
    """
    return logging.getLogger(logger_name(GlobalConfig._check(class_name)))


def log(class_name: str, message: str) -> None:
    """Log `message` at INFO for `class_name` (shown or written as GlobalConfig / logging say).

    Raises:
        ValueError: unknown `class_name`.
    """
    get_logger(class_name).info(message)


@contextlib.contextmanager
def progress_logging() -> Iterator[None]:
    """Within this block, console log handlers on the root logger write
    through ``tqdm.write``, so log lines and progress bars do not tear each other."""
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        yield
        return
    # Only the root: the package's own console handler already writes through tqdm.write.
    with logging_redirect_tqdm(loggers=[logging.root]):
        yield
