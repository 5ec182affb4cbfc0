"""`mim up/down/status`: the project's local Prefect and MLflow servers; `mim serve`: the Prefect deployments,
run as `python -m flows` (the orchestration layer lives in `flows/`, which `mim` never imports)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from mim.cli import deployments, profile
from mim.cli.common import require_pipeline
from mim.project.state import state_dir

PROFILE_RECORD = "prefect-profile.json"  # in .mim/: the Prefect profile values `mim up` replaced


def add_parsers(sub: argparse._SubParsersAction) -> None:
    for name, text in (("up", "start the local Prefect and MLflow servers (127.0.0.1, state in .mim/)"),
                       ("down", "stop the servers `mim up` started and restore the Prefect profile"),
                       ("status", "show the local servers and whether something serves each deployment")):
        sv = sub.add_parser(name, help=text)
        if name == "up":
            sv.add_argument("--prefect-port", type=_port, default=4200, help="default 4200")
            sv.add_argument("--mlflow-port", type=_port, default=5000, help="default 5000; not the Prefect port")
        sv.set_defaults(func=cmd_services)
    sv = sub.add_parser("serve", help="serve the Prefect deployments (pretrain/<method>, pipeline/all); blocks "
                        "(the same as `python -m flows`)")
    sv.set_defaults(func=cmd_serve)
    dp = sub.add_parser("deploy", help="register the deployments on a Prefect work pool, so a worker on a GPU node "
                        "runs them (the same as `python -m flows.deploy`)")
    dp.add_argument("--pool", required=True, help="work pool name (created as a process pool if missing)")
    dp.set_defaults(func=cmd_deploy)
    deployments.add_parser(sub)


def _port(text: str) -> int:
    """A TCP port number, 1-65535 (argparse turns the error into `mim up: error: argument --X-port: ...`)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range: choose 1-65535")
    return port


def cmd_services(args: argparse.Namespace) -> int:
    from mim.project import services
    from mim.project.state import project_dir

    require_pipeline()
    root = project_dir()
    if args.command == "up":
        states = services.up(root, prefect_port=args.prefect_port, mlflow_port=args.mlflow_port)
        for name, st in states.items():
            print(f"{name:<8} {st.url}  (pid {st.pid}, log {st.log})")
        print(f"Prefect API: {_point_prefect_profile(states['prefect'].url + '/api', root)}")
        print(f"MLflow UI:   {states['mlflow'].url}")
        return 0
    if args.command == "down":
        stopped = services.down(root)
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        if line := profile.restore(state_dir(root) / PROFILE_RECORD):
            print(line)
        return 0
    recorded = services.recorded(root)
    for name, st in services.status(root).items():
        url = recorded[name].url if name in recorded else f"http://{services.HOST}:{services.DEFAULT_PORTS[name]}"
        print(f"{name:<8} " + (f"{st.url}  (pid {st.pid})" if st else f"not running ({url}): start it with `mim up`"))
    for line in deployments.status_lines(deployments.api_url(root)):
        print(line)
    return 0


def _point_prefect_profile(api_url: str, root: Path) -> str:
    """Point the active Prefect profile at our server, so a plain `prefect deployment run ...` finds it."""
    from prefect.exceptions import PrefectException

    try:
        return profile.point(api_url, state_dir(root) / PROFILE_RECORD)
    except (OSError, ValueError, PrefectException) as err:
        return f"export PREFECT_API_URL={api_url}  (could not set it in the Prefect profile: {err})"


def _flows_env() -> dict[str, str]:
    """This environment plus the project's Prefect server (`PREFECT_API_URL`, unless set) and the project folder;
    ServiceError when that server does not answer (the flows would end in a connection traceback)."""
    from mim.project import services
    from mim.project.state import project_dir

    require_pipeline()
    root = project_dir()
    env = dict(os.environ)
    env["PREFECT_API_URL"] = deployments.require_server(env.get("PREFECT_API_URL") or services.prefect_api_url(root))
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env["MIM_PROJECT_DIR"] = str(root)  # flow runs act on this project, wherever their process starts
    return env


def cmd_serve(args: argparse.Namespace) -> int:
    """Find the project's Prefect server, then replace this process by `python -m flows` (which blocks)."""
    env = _flows_env()
    print(f"serving deployments against {env['PREFECT_API_URL']} for {env['MIM_PROJECT_DIR']}", flush=True)
    os.execve(sys.executable, [sys.executable, "-m", "flows"], env)


def cmd_deploy(args: argparse.Namespace) -> int:
    """`python -m flows.deploy --pool NAME` against the project's Prefect server."""
    env = _flows_env()
    return subprocess.call([sys.executable, "-m", "flows.deploy", "--pool", args.pool], env=env)
