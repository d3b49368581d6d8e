"""A module process of the split mode (`python -m app --modules <names>`): its modules' routes
behind the gateway process alone, announced so that the gateway finds it."""

from __future__ import annotations

import os

from app.gateway.admin import AdminController
from app.gateway.faults import FaultsController
from app.gateway.gateway import Entrance
from app.kernel.credentials import CurrentCredentials
from app.kernel.ids import new_id
from app.runtime import Runtime
from app.split.credentials import CredentialsAnswerer
from app.split.discovery import Announcer, Instance
from app.split.keyring import KeyringAnswerer, KeyringOverNats
from app.split.proof import GatewayProof, GatewayProofMiddleware
from app.split.watch import WatchReporter


def behind_the_gateway(runtime: Runtime, secret_key: str) -> Entrance:
    """Only requests the gateway signed get in (it authenticates, limits and serves the
    topology); the process announces itself while it runs, and a process with the module
    owning credentials answers the gateway's questions about them; the one owning the keys
    of personal data opens what other processes ask, and they ask it (app/split/keyring.py)."""
    settings = runtime.settings
    if isinstance(runtime.credentials, CurrentCredentials):
        runtime.services.append(CredentialsAnswerer(settings.bus_url, runtime.credentials))
    if runtime.personal_data.bound:
        runtime.services.append(KeyringAnswerer(settings.bus_url, runtime.personal_data))
    else:
        keyring = KeyringOverNats(settings.bus_url)
        runtime.personal_data.bind(keyring)
        runtime.services.append(keyring)
    # What this process's bus does, for the gateway's watch (the page's stream and journeys).
    runtime.services.append(WatchReporter(settings.bus_url, runtime.bus.watch))
    names = tuple(running.module.name for running in runtime.modules)
    instance = Instance(
        modules=names, instance=new_id(), url=settings.reachable_url, pid=os.getpid()
    )
    # Started last and stopped first (runtime services): the gateway stops sending here
    # before the modules stop.
    runtime.services.append(
        Announcer(
            settings.bus_url, instance, wait_for_listener=True, replicas=settings.nats_replicas
        )
    )
    return Entrance(
        identity=[GatewayProofMiddleware(GatewayProof(secret_key))],
        # This process's bus and fault switches: the gateway's /api/admin asks every
        # process (app/split/admin.py).
        own_routes=[AdminController, FaultsController],
        process=",".join(names),
    )
