"""`mim run <flow>/<deployment>`: `prefect deployment run` after checking that the Prefect server answers and that
something serves the deployment (else a flow run would wait, scheduled, forever); `mim status` lists the same.

Prefect records when a `mim serve` process or a work pool's worker last polled for a deployment's runs
(`last_polled`, every 10 s by default; READY/NOT_READY); a deployment polled within `SERVED_WITHIN_S` is served.
The checks use Prefect's REST API directly, so `mim status` stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mim.cli.common import require_pipeline
from mim.project.services import ServiceError

SERVED_WITHIN_S = 60.0  # Prefect's own NOT_READY timeout; runners and workers poll every 10-15 s
SERVE_HINT = "start `mim serve` (or `mim deploy --pool NAME` and `prefect worker start --pool NAME`)"


@dataclass
class Deployment:
    """A deployment as the Prefect server knows it, and whether something polled for its runs lately."""

    name: str  # flow/deployment
    pool: str | None
    last_polled: datetime | None
    ready: bool

    def served(self, now: datetime | None = None) -> bool:
        if not self.ready or self.last_polled is None:
            return False
        return ((now or datetime.now(UTC)) - self.last_polled).total_seconds() <= SERVED_WITHIN_S

    def hint(self) -> str:
        if self.pool:
            return f"start a worker: `prefect worker start --pool {self.pool}` (or serve it here: `mim serve`)"
        return SERVE_HINT

    def why_not(self) -> str:
        """What polled it last, for a user who expected it to be served."""
        where = f"work pool {self.pool!r}" if self.pool else "a `mim serve` process"
        if self.last_polled is None:
            return f"no worker has ever polled it (it expects {where})"
        ago = (datetime.now(UTC) - self.last_polled).total_seconds()
        return f"last polled {_ago(ago)} ago (it expects {where})"


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def api_url(root: Path) -> str | None:
    """The Prefect API to check and run against: PREFECT_API_URL from the environment, else this project's server
    (`mim up`) when it runs, else the active Prefect profile's (what a plain `prefect deployment run` uses)."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"].rstrip("/")
    from mim.project import services

    if url := services.prefect_api_url(root):
        return url
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url).rstrip("/") if url else None


def _call(url: str, body: dict | None = None, timeout_s: float = 5.0) -> object:
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key := os.environ.get("PREFECT_API_KEY"):  # a server behind an API key (Prefect Cloud)
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, headers=headers, method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read() or b"null")


def answers(api: str) -> bool:
    """Whether a server answers at `api`: any HTTP reply counts (one that refuses us, e.g. for a missing API key,
    is up; the calls that follow say what it refused)."""
    try:
        _call(f"{api}/health")
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False
    return True


def require_server(api: str | None) -> str:
    """`api` (without a trailing slash) when a Prefect server answers there; else ServiceError saying to start one."""
    api = api.rstrip("/") if api else None
    if api is None or not answers(api):
        raise ServiceError(down_line(api))
    return api


def down_line(api: str | None) -> str:
    if api is None:
        return "no Prefect server is configured (PREFECT_API_URL unset): start one with `mim up`"
    return f"the Prefect server at {api} does not answer: start it with `mim up` (or set PREFECT_API_URL)"


def _deployment(raw: dict, flow: str) -> Deployment:
    polled = raw.get("last_polled")
    when = datetime.fromisoformat(polled.replace("Z", "+00:00")) if polled else None
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return Deployment(f"{flow}/{raw['name']}", raw.get("work_pool_name"), when, raw.get("status") == "READY")


def deployments(api: str) -> list[Deployment]:
    """Every deployment on the server at `api`, by name."""
    flows = {f["id"]: f["name"] for f in _call(f"{api}/flows/filter", {})}  # type: ignore[union-attr]
    found = [_deployment(d, flows.get(d["flow_id"], "?")) for d in _call(f"{api}/deployments/filter", {})]  # type: ignore[union-attr]
    return sorted(found, key=lambda d: d.name)


def find(api: str, name: str) -> Deployment | None:
    flow, _, dep = name.partition("/")
    quoted = "/".join(urllib.parse.quote(p, safe="") for p in (flow, dep))
    try:
        return _deployment(_call(f"{api}/deployments/name/{quoted}"), flow)  # type: ignore[arg-type]
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise


def check_served(api: str | None, name: str) -> Deployment:
    """The deployment `name` when the server answers and something serves it; else ServiceError with the hint."""
    api = require_server(api)
    if "/" not in name:
        raise ServiceError(f"{name!r}: name a deployment as FLOW/DEPLOYMENT, e.g. pretrain/mae or pipeline/all")
    dep = find(api, name)
    if dep is None:
        known = ", ".join(d.name for d in deployments(api)) or "none"
        raise ServiceError(f"no deployment {name} on {api} (deployed: {known}): {SERVE_HINT}")
    if not dep.served():
        raise ServiceError(f"no worker is serving {name}: {dep.why_not()}; {dep.hint()}")
    return dep


def status_lines(api: str | None) -> list[str]:
    """One line per deployment: served or not, with the hint."""
    if api is None or not answers(api):
        return [down_line(api)]
    try:
        deps = deployments(api)
    except (OSError, ValueError) as err:  # the server answers its health check but not this query
        return [f"deployments: could not list them on {api}: {err}"]
    if not deps:
        return [f"deployments: none on {api}; {SERVE_HINT}"]
    width = max(len(d.name) for d in deps)
    return [f"{d.name:<{width}}  " + ("served" if d.served() else f"NOT SERVED: {d.why_not()}") for d in deps]


def add_parser(sub: argparse._SubParsersAction) -> None:
    rp = sub.add_parser("run", help="run a deployment (`prefect deployment run`), after checking that the Prefect "
                        "server answers and that a `mim serve` process or a worker serves it")
    rp.add_argument("deployment", help="FLOW/DEPLOYMENT, e.g. pretrain/mae or pipeline/all")
    rp.add_argument("prefect_args", nargs=argparse.REMAINDER,
                    help="passed on to `prefect deployment run` (e.g. -p epochs=1 --watch)")
    rp.set_defaults(func=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    """Check, then replace this process by `prefect deployment run NAME ...` against the checked server."""
    from mim.project.state import project_dir

    require_pipeline()
    api = api_url(project_dir())
    check_served(api, args.deployment)
    from mim.project.services import executable

    prefect = executable("prefect")
    env = {**os.environ, "PREFECT_API_URL": str(api)}
    sys.stdout.flush()
    os.execve(prefect, [prefect, "deployment", "run", args.deployment, *args.prefect_args], env)
