"""pathTests: conditions on prefixes of a mutator's location (``MustExist`` / ``MustNotExist``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .path import Path

MUST_EXIST = "MustExist"
MUST_NOT_EXIST = "MustNotExist"
CONDITIONS = (MUST_EXIST, MUST_NOT_EXIST)


class PathTestError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class PathTest:
    sub_path: Path
    condition: str


class Tester:
    """Answers, for the node at a depth of the location, whether it may exist or be missing."""

    __slots__ = ("_by_depth",)

    def __init__(self, location: Path, tests: Sequence[PathTest]) -> None:
        by_depth: dict[int, str] = {}
        paths: dict[int, Path] = {}
        for test in tests:
            if test.condition not in CONDITIONS:
                raise PathTestError(f"pathTests condition {test.condition!r} is not one of {', '.join(CONDITIONS)}")
            if not test.sub_path.is_prefix_of(location):
                raise PathTestError(
                    "all subpaths must be a prefix of the `location` value of the mutation: "
                    f'subpath "{test.sub_path}" is not a prefix of location "{location}"'
                )
            depth = len(test.sub_path) - 1
            if depth < 0:
                raise PathTestError("pathTests subPath must not be empty")
            previous = by_depth.get(depth)
            if previous is not None and previous != test.condition:
                raise PathTestError(
                    f'conflicting path test conditions: path "{test.sub_path}" is marked both '
                    f"{MUST_EXIST} and {MUST_NOT_EXIST}"
                )
            by_depth[depth] = test.condition
            paths[depth] = test.sub_path
        forbidden = [d for d, c in by_depth.items() if c == MUST_NOT_EXIST]
        for depth, condition in by_depth.items():
            if condition != MUST_EXIST:
                continue
            for parent in forbidden:
                if parent < depth:
                    raise PathTestError(
                        f'conflicting path test conditions: path "{paths[depth]}" is marked '
                        f'{MUST_EXIST} but parent "{paths[parent]}" {MUST_NOT_EXIST}'
                    )
        self._by_depth = by_depth

    def exists_ok(self, depth: int) -> bool:
        return self._by_depth.get(depth) != MUST_NOT_EXIST

    def missing_ok(self, depth: int) -> bool:
        return self._by_depth.get(depth) != MUST_EXIST


def must_not_exist_at_leaf(location: Path) -> Tester:
    """The tester AssignMetadata uses: it only ever adds."""
    return Tester(location, [PathTest(location, MUST_NOT_EXIST)])
