"""`pack-python`: the example packing strategy of examples/README.md, as a WASM component built by
componentize-py against the `scheduling-strategy` world of SPEAR's WIT files.

Each request goes to the eligible target with the *most* active work (ties: the lowest id), so work
packs onto busy targets and leaves the others free to be drained or scaled down. `max_active` caps
how much a target takes.

componentize-py generates the `wit_world` package from the WIT files at build time; the export is
the class below, named like the exported interface (`Strategy`). The module runs under CPython
inside the component: the stdlib is there (we use `json`), but the host grants no filesystem,
network or environment.
"""

import json
from typing import Dict, List, Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host
from wit_world.imports.types import (
    Decision,
    Decision_Assign,
    Decision_Reject,
    Outcome,
    PluginInfo,
    PluginKind,
    Request,
    Resources,
    Target,
)

NAME = "pack-python"
VERSION = "0.1.0"

# The JSON Schema of the configuration, as `info` reports it.
CONFIG_SCHEMA = (
    '{"type":"object","properties":{"max_active":{"type":"integer","minimum":1}},'
    '"additionalProperties":false}'
)

# `active` is a u32 on the wire, so a larger cap means nothing; refuse it like the Rust example.
U32_MAX = 2**32 - 1


def parse_config(text: str) -> Optional[int]:
    """Read `{"max_active": N}` into N (None: no limit). Raises ValueError naming the problem."""
    text = text.strip()
    if text in ("", "null"):
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ValueError(f"config is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise ValueError("config must be a JSON object")
    max_active = None
    # Sorted, so that with several problems the one reported is the same as in the other examples.
    for key in sorted(value):
        if key == "max_active":
            n = value[key]
            # `bool` is a subclass of `int` in Python: `true` is not a count.
            if type(n) is not int or not 1 <= n <= U32_MAX:
                raise ValueError("max_active: must be a positive integer")
            max_active = n
        else:
            raise ValueError(f"unknown key `{key}`")
    return max_active


def fits(request: Request, target: Target) -> bool:
    """The host's hard rules: healthy, enough of every resource, every required label."""
    need, have = request.needs, target.available
    return (
        target.healthy
        and have.cpu_millis >= need.cpu_millis
        and have.memory_mb >= need.memory_mb
        and have.disk_mb >= need.disk_mb
        and all(label in target.labels for label in request.required)  # dataclass equality
    )


def claim(target: Target, needs: Resources) -> None:
    """Count one placement in the view, so that later requests of the batch see it."""
    target.active = min(target.active + 1, U32_MAX)
    a = target.available
    target.available = Resources(
        cpu_millis=max(a.cpu_millis - needs.cpu_millis, 0),
        memory_mb=max(a.memory_mb - needs.memory_mb, 0),
        disk_mb=max(a.disk_mb - needs.disk_mb, 0),
    )


class View:
    """What the strategy keeps between calls: the host's targets by id and the configuration."""

    def __init__(self) -> None:
        self.targets: Dict[int, Target] = {}
        self.max_active: Optional[int] = None


# componentize-py constructs the export class anew for each call, so anything that must survive
# from one call to the next lives at module level. The module itself stays alive as long as the
# component instance does (the host drops and re-creates the instance after a failure, and then
# configures it and re-sends the view).
VIEW = View()


class Strategy(exports.Strategy):
    """The exported `strategy` interface (the class name must match the interface name)."""

    def info(self) -> PluginInfo:
        return PluginInfo(
            name=NAME,
            version=VERSION,
            kind=PluginKind.SCHEDULING_STRATEGY,
            description="Packing: the busiest target that fits first, up to max_active",
            config_schema=CONFIG_SCHEMA,
        )

    def configure(self, config: str) -> None:
        # A result<_, string> error is raised as `Err(message)`; the old configuration stays.
        try:
            max_active = parse_config(config)
        except ValueError as e:
            raise Err(str(e))
        VIEW.max_active = max_active
        host.log(host.LogLevel.DEBUG, f"{NAME}: max_active = {max_active}")

    def upsert(self, targets: List[Target]) -> None:
        for t in targets:
            VIEW.targets[t.id] = t

    def remove(self, ids: List[int]) -> None:
        for i in ids:
            VIEW.targets.pop(i, None)

    def place(self, requests: List[Request]) -> List[Decision]:
        cap = VIEW.max_active
        # Rank the view once per batch, the busiest first and ties to the lowest id, so that each
        # request takes the first target of the ranking that fits (usually the very first) rather
        # than scanning the whole view. Unhealthy targets and those at the cap cannot become
        # candidates during the batch: leave them out.
        ranked = sorted(
            (t for t in VIEW.targets.values() if t.healthy and (cap is None or t.active < cap)),
            key=lambda t: (-t.active, t.id),
        )
        decisions: List[Decision] = []
        for r in requests:
            i = next((i for i, t in enumerate(ranked) if fits(r, t)), None)
            if i is None:
                decisions.append(Decision_Reject("no target fits"))
                continue
            t = ranked[i]
            claim(t, r.needs)
            decisions.append(Decision_Assign(t.id))
            if cap is not None and t.active >= cap:
                del ranked[i]
            else:
                # One more active unit: move it up past the targets it now outranks.
                while i > 0 and (ranked[i - 1].active, -ranked[i - 1].id) < (t.active, -t.id):
                    ranked[i - 1], ranked[i] = t, ranked[i - 1]
                    i -= 1
        return decisions

    def observe(self, outcomes: List[Outcome]) -> None:
        pass  # packing learns nothing from outcomes

    def save_state(self) -> bytes:
        return b""  # nothing learned; the host re-sends the view after a swap

    def restore_state(self, state: bytes) -> None:
        pass  # accepts anything
