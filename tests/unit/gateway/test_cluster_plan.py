"""`python -m app cluster`: what each process of the split is told about the network."""

from __future__ import annotations

import sys
from pathlib import Path

from app.kernel.settings import Settings
from app.split.cluster import plan

MODULES = ["users", "orders", "payments", "notifications"]


def test_only_the_gateway_believes_x_forwarded_for_from_the_trusted_proxies(
    tmp_path: Path,
) -> None:
    """The gateway faces the proxies; a module process hears only the gateway, whose proof
    names the client, so an X-Forwarded-For there is never believed."""
    settings = Settings.from_env(
        {"APP_TRUSTED_PROXIES": "10.0.0.0/8", "APP_DATA_DIR": str(tmp_path)}
    )
    the_plan = plan(
        settings,
        MODULES,
        replicas={"payments": 2},
        nats_url="nats://127.0.0.1:4222",
        secret_key="k" * 48,
        python=sys.executable,
    )

    trusted = {
        child.name: child.env.get("APP_TRUSTED_PROXIES", "inherited") for child in the_plan.children
    }
    assert trusted == {
        "gateway": "inherited",
        "users": "",
        "orders": "",
        "payments.1": "",
        "payments.2": "",
        "notifications": "",
    }
