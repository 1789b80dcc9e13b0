"""The life cycle of a test's own servers and set-ups: `with X(...) as x` starts x, and closes
it whatever happens."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Started:
    def start(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
