"""The ingress is chosen before Serve is imported; choosing it later is an error."""

from __future__ import annotations

import os

import pytest
from ray.serve._private import constants

from mp_ray.serve.ingress import INGRESS_ENVIRONMENT, use_ingress


def test_this_session_imported_serve_with_the_default_ingress():
    assert constants.RAY_SERVE_ENABLE_HA_PROXY and constants.RAY_SERVE_THROUGHPUT_OPTIMIZED
    use_ingress("haproxy")  # the same choice again: nothing to change
    assert INGRESS_ENVIRONMENT["haproxy"].items() <= os.environ.items()


def test_another_ingress_after_serve_was_imported_is_refused():
    before = dict(os.environ)
    with pytest.raises(RuntimeError, match=r"'proxy' ingress must be chosen before ray\.serve"):
        use_ingress("proxy")
    assert dict(os.environ) == before
