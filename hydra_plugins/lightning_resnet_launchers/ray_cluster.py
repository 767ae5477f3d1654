"""Joining a Ray cluster from the sweep's driver, and the resources each job asks of it.

Ray is imported only here, inside the functions, so Hydra's start-up scan of `hydra_plugins` works
without the `ray` extra.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Mapping
from typing import Any

from lightning_resnet.errors import ConfigError
from lightning_resnet.utils import require

log = logging.getLogger(__name__)

# Ray replaces a loopback node address by the machine's outward one (so that other machines could
# join) unless this switch, Ray's "single-machine mode" (the default on macOS and Windows), is 0.
LOCAL_ONLY_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
AUTH_MODE = "RAY_AUTH_MODE"  # `token`: send the token of ~/.ray/auth_token (or RAY_AUTH_TOKEN[_PATH])
INIT_KEY = "hydra.launcher.ray.init"
REMOTE_KEY = "hydra.launcher.ray.remote"


def is_loopback(address: str | None) -> bool:
    """True for `127.x.y.z[:port]`, `localhost[:port]`, `[::1][:port]`: a cluster on this machine only."""
    if not address:
        return False
    host = address.rsplit("://", 1)[-1]
    host = host[1 : host.index("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connect(init: Mapping[str, Any]) -> None:
    """`ray.init(**init)` unless this process is connected already.

    `address: null` starts a Ray for this sweep, on loopback and without a dashboard; a loopback
    address joins a cluster that was started on loopback (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ray start
    --head --node-ip-address=127.0.0.1`). In both cases the driver must stay on loopback too, or Ray
    would look for the cluster at the machine's outward address.
    """
    options = dict(init)
    address = options.get("address")
    if address is None or is_loopback(address):
        _stay_on_loopback(address)
    ray = require("ray", "ray")
    if ray.is_initialized():
        return
    if _is_host_port(address):
        _check_reachable(address)
        _check_token(address)
    if address is None:
        options.setdefault("include_dashboard", False)
    log.info("Ray: %s", f"joining the cluster at {address}" if address else "starting a Ray on this machine")
    try:
        ray.init(**options)
    except ConnectionError as err:
        if not _refused_for_token(err):
            raise
        raise _token_error(address) from None


def _token_error(address: str | None) -> ConfigError:
    return ConfigError(
        f"{INIT_KEY}.address={address}: the cluster uses Ray's token authentication and this driver sent no "
        f"valid token; run the sweep with {AUTH_MODE}=token and the cluster's token in ~/.ray/auth_token, "
        "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH (`ray start --head` turns it on by itself when "
        "~/.ray/auth_token exists, which a Ray started by `ray.init()`, e.g. address: null, writes)"
    )


def _refused_for_token(err: BaseException) -> bool:
    """Whether Ray's error chain says the cluster wants an authentication token."""
    import ray.exceptions

    token_error = getattr(ray.exceptions, "AuthenticationError", ())  # Ray releases with token authentication
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, token_error) or "InvalidAuthToken" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _is_host_port(address: str | None) -> bool:
    """A GCS address (`HOST:PORT`), not `auto`, `local`, `ray://...` or null."""
    return address is not None and address not in ("auto", "local") and "://" not in address


def _check_reachable(address: str) -> None:
    """A `host:port` where nothing listens fails here in seconds; `ray.init` would retry for minutes."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"{INIT_KEY}.address={address}: no Ray head answers there ({err}); start one with `ray start --head` "
            "or give its address as HOST:PORT (null: a Ray on this machine for the sweep)"
        ) from None


def _check_token(address: str) -> None:
    """A cluster that refuses this driver's token fails here at once; `ray.init` retries the refused call
    for ~20 s (RAY_NUM_REDIS_GET_RETRIES) before it gives up. One call of the GCS client `ray.init` itself
    uses; a Ray without it, or any other failure, is left to `ray.init` to report."""
    try:
        from ray._raylet import GcsClient
    except ImportError:
        return
    try:
        GcsClient(address=address)
    except Exception as err:
        if _refused_for_token(err):
            raise _token_error(address) from None


def _stay_on_loopback(address: str | None) -> None:
    if "ray" not in sys.modules:
        os.environ.setdefault(LOCAL_ONLY_SWITCH, "0")
        return
    from ray._private import ray_constants  # imported before us (another plugin): read what it decided

    if ray_constants.ENABLE_RAY_CLUSTER:
        raise ConfigError(
            f"{INIT_KEY}.address={address}: Ray was imported before the launcher and would replace the loopback "
            f"address by this machine's outward one; run the sweep with {LOCAL_ONLY_SWITCH}=0"
        )


def job_resources(remote: Mapping[str, Any], check: bool = True) -> dict[str, Any]:
    """The `ray.remote` options of every job: `num_gpus: auto` becomes 1 on a cluster with GPUs, else 0.

    With `check`, a job that no alive node could hold stops the sweep here, naming the key: Ray itself
    would keep such a task pending forever (an "infeasible" task), and the driver would wait with it.
    """
    import ray

    options = dict(remote)
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    if options.get("num_gpus") == "auto":
        options["num_gpus"] = 1 if any(node.get("GPU", 0) >= 1 for node in nodes) else 0
    if check:
        wanted = {"CPU": options.get("num_cpus") or 0, "GPU": options.get("num_gpus") or 0}
        wanted.update(options.get("resources") or {})
        if not any(all(node.get(name, 0) >= amount for name, amount in wanted.items()) for node in nodes):
            largest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
            have = {name: largest.get(name, 0) for name in wanted}
            raise ConfigError(
                f"{REMOTE_KEY}: each job asks for {wanted}, and no node of the Ray cluster has that much "
                f"(the largest: {have}); lower num_cpus / num_gpus, or set hydra.launcher.check_resources=false "
                "for a cluster that adds nodes on demand"
            )
    return options
