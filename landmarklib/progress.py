"""Progress bars that reach whoever watches the work.

- A terminal (the CLIs, bench scripts): tqdm's text bar on stderr.
- A notebook with a person at it (Jupyter, Colab): tqdm.auto's widget bar.
- A headless kernel (`papermill notebooks/train.ipynb out.ipynb ...`, the ablation's children,
  `!papermill` in Colab): a live text bar on the terminal that started papermill, which is the
  kernel process's own stderr, and a few plain lines in the notebook's output (0 %, each quarter,
  the end), which is what `--log-output` prints and what out.ipynb keeps. A widget bar there
  would be logged once at 0 % and never again.

ipykernel (by default; Colab turns it off) captures the kernel's file descriptor 2 into the
notebook and echoes it to the original stderr; the live bar writes to that original copy only, so
out.ipynb does not fill with carriage returns. The live bar is drawn only on a terminal (a tty):
a log file gets the plain lines alone.
"""
from __future__ import annotations

import io
import os
import sys

from tqdm import tqdm as text_bar
from tqdm.auto import tqdm as auto_bar

from .colab import frontend_attached, headless_kernel

_terminal_stream: io.TextIOBase | None | bool = False   # False: not looked up yet


def terminal() -> io.TextIOBase | None:
    """The kernel process's own stderr when it is a terminal, else None."""
    global _terminal_stream
    if _terminal_stream is False:
        fd = getattr(sys.stderr, "_original_stdstream_copy", None)   # ipykernel's copy of fd 2
        if fd is None and sys.__stderr__ is not None:
            fd = sys.__stderr__.fileno()
        try:
            _terminal_stream = open(fd, "w", buffering=1, closefd=False) if fd is not None and os.isatty(fd) else None
        except OSError:
            _terminal_stream = None
    return _terminal_stream


class HeadlessBar(text_bar):
    """A text bar on the terminal (when there is one) plus plain lines in the notebook's output."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("file", terminal() or io.StringIO())
        kwargs.setdefault("dynamic_ncols", False)
        kwargs.setdefault("ncols", 100)
        self._quarter = -1
        super().__init__(*args, **kwargs)
        self._line()

    def _line(self, final: bool = False) -> None:
        if self.disable:
            return
        quarter = int(4 * self.n / self.total) if self.total else (4 if final else 0)
        if quarter > self._quarter or (final and self._quarter < 4):
            self._quarter = quarter
            d = self.format_dict
            print(self.format_meter(**(d | {"ncols": 0, "bar_format":
                  "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"
                  if d["total"] else "{desc}: {n_fmt} [{elapsed}, {rate_fmt}{postfix}]"})), flush=True)

    def update(self, n=1):
        out = super().update(n)
        self._line()
        return out

    def close(self):
        if not self.disable and (not self.total or self.n >= self.total):
            self._line(final=True)
        super().close()


def bar(iterable=None, **kwargs):
    """A progress bar (tqdm's arguments) for wherever this runs."""
    if headless_kernel():
        return HeadlessBar(iterable, **kwargs)
    if frontend_attached():
        return auto_bar(iterable, **kwargs)
    return text_bar(iterable, **kwargs)


def note(line: str) -> None:
    """A line for the log: the notebook's output (or stdout), and in a headless kernel the terminal
    too, above any live bars."""
    print(line, flush=True)
    if headless_kernel() and terminal() is not None:
        text_bar.write(line, file=terminal())
