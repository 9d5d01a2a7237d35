"""Structured logs: stdout and stderr carry only JSON objects, one per line.

Our records go through JsonFormatter. Library output is brought into the same shape three ways: the transformers
and diffusers loggers drop their own stream handlers and propagate to ours (adopt_library_logging, called once
they are imported), Python warnings become log records (logging.captureWarnings), and anything still printed
to sys.stdout/sys.stderr (progress bars, print calls) is wrapped into a JSON line by JsonLineStream. Prompt text
reaches the logs only with --log-prompts: diffusers' "input was truncated" warning quotes the prompt's tail.
"""
from __future__ import annotations

import io
import json
import logging
import sys
import time

# diffusers' text-encoder truncation warning ends with the part of the prompt that was cut off.
_PROMPT_QUOTING = ("was truncated because",)


def _timestamp(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class PromptRedaction(logging.Filter):
    """Drop the prompt text that library warnings quote, unless prompts may be logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for marker in _PROMPT_QUOTING:
            if marker in message:
                head = message.split(":", 1)[0] if ":" in message else message
                record.msg, record.args = head + " (prompt text omitted; --log-prompts shows it)", None
        return True


class JsonLineStream(io.TextIOBase):
    """A text stream that passes JSON lines through and wraps every other line as a JSON log entry."""

    def __init__(self, target, name: str):
        self._target = target
        self._name = name
        self._buffer = ""

    def writable(self) -> bool:
        return True

    def _stream(self):
        # A closed target (an in-process caller's captured stream, since replaced) falls back to the process's own.
        return self._target if not getattr(self._target, "closed", False) else sys.__stderr__

    def write(self, text: str) -> int:
        self._buffer += text.replace("\r", "\n")  # progress bars redraw with \r
        while "\n" in self._buffer:
            line, self._buffer = self._buffer.split("\n", 1)
            self._emit(line)
        return len(text)

    def _emit(self, line: str) -> None:
        if not line.strip():
            return
        if not line.startswith("{"):
            line = json_line("warning", self._name, line)
        stream = self._stream()
        stream.write(line + "\n")
        stream.flush()

    def flush(self) -> None:
        self._stream().flush()

    def fileno(self) -> int:
        return self._target.fileno()

    def isatty(self) -> bool:
        return False


class _StderrHandler(logging.StreamHandler):
    """Writes to the current real stderr, looked up per record (not the stream of the moment it was built)."""

    @property
    def stream(self):
        current = sys.stderr
        return current._stream() if isinstance(current, JsonLineStream) else current

    @stream.setter
    def stream(self, _value) -> None:
        pass


def configure_logging(level: str = "info", log_prompts: bool = False) -> None:
    stderr = sys.stderr._target if isinstance(sys.stderr, JsonLineStream) else sys.stderr
    stdout = sys.stdout._target if isinstance(sys.stdout, JsonLineStream) else sys.stdout
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter())
    if not log_prompts:
        handler.addFilter(PromptRedaction())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own loggers go through the JSON handler too; its access log is replaced by ours (one line per
    # request, with generation fields).
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    logging.captureWarnings(True)
    sys.stderr = JsonLineStream(stderr, "stderr")
    sys.stdout = JsonLineStream(stdout, "stdout")


def json_line(level: str, logger: str, message: str) -> str:
    """One log line in the JSON shape, for messages written before (or without) the logging setup."""
    return json.dumps({"ts": _timestamp(time.time()), "level": level, "logger": logger, "msg": message}, ensure_ascii=False)


def adopt_library_logging() -> None:
    """Route transformers' and diffusers' loggers through the JSON handler (call after importing them)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for library in (transformers_logging, diffusers_logging):
        library.disable_default_handler()
        library.enable_propagation()
