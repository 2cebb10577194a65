"""``steplake train`` as a process against a real server (uvicorn thread, SQLite file, a fake SGLang-style
upstream that reloads), with a small random Llama as the policy (``--model``): a trainer SIGKILLed in the middle
of a batch leaves it leased and the pool serves it again after its lease; a restarted trainer resumes from the
last published version with its optimizer state; the versioned folders keep the last ``--keep``."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from steplake.client import Client  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.gateway.fake_upstream import FakeUpstreamThread  # noqa: E402
from tests.procs import serve_app, stop_process  # noqa: E402

VOCAB = 96


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random Llama big enough that one optimizer step on a batch takes a noticeable moment."""
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=256, intermediate_size=1024, num_hidden_layers=6,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
    path = tmp_path_factory.mktemp("tiny") / "model"
    transformers.LlamaForCausalLM(cfg).save_pretrained(str(path))
    return str(path)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, FakeUpstreamThread, Path]]:
    from steplake.app import create_app
    from steplake.config import Settings

    fake = FakeUpstreamThread(free_port()).start()
    root = tmp_path / "weights"
    root.mkdir()
    port = free_port()
    s = Settings(port=port, db=str(tmp_path / "pool.db"), upstream=[f"sglang+{fake.url}"], weights_root=str(root))
    try:
        with serve_app(create_app(s), port) as url:
            yield url, fake, root
    finally:
        fake.stop()


def seed_groups(url: str, n_groups: int, size: int = 4, prompt_len: int = 300, response_len: int = 200) -> list[str]:
    """Complete groups of single-step trajectories (token ids only, rewards 1/0 alternating)."""
    rng = random.Random(0)
    ids = []
    with Client(url) as c:
        for _ in range(n_groups):
            g = c.create_group(size, channel="train")
            for k, t in enumerate(g["trajectories"]):
                c.submit_steps([{"trajectory_id": t["trajectory_id"], "step_index": 0,
                                 "prompt_ids": [rng.randrange(1, VOCAB) for _ in range(prompt_len)],
                                 "response_ids": [rng.randrange(1, VOCAB) for _ in range(response_len)]}])
                c.complete(t["trajectory_id"], reward=float(k % 2))
            ids.append(str(g["group_id"]))
    return ids


def trainer(url: str, model: str, out: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "steplake", "train", "--url", url, "--model", model, "--out-dir", str(out),
           "--groups", "1", "--threads", "1", "--idle-timeout", "3", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> str:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process(proc)  # type: ignore[arg-type]
        raise
    assert proc.returncode == 0, out
    return out


def leased_groups(url: str, groups: int, lease: float = 60) -> list[str]:
    with Client(url) as c:
        batch: Any = c.fetch_batch(groups=groups, recipe="grpo", lease_seconds=lease)
    return [g["group_id"] for g in batch["groups"]]


def test_a_trainer_killed_mid_batch_leaves_it_to_be_served_again(server: Any, tiny_model: str, tmp_path: Path) -> None:
    url, _, root = server
    groups = seed_groups(url, 2)
    proc = trainer(url, tiny_model, root / "run", "--lease-seconds", "6")
    assert proc.stdout is not None
    line = ""
    for line in proc.stdout:  # noqa: B007 - the line is read after the loop
        if line.startswith("batch "):
            proc.send_signal(signal.SIGKILL)  # before its optimizer step is over: nothing acked
            break
    proc.wait(30)
    assert line.startswith("batch "), "the trainer never received a batch"
    killed = line.split("groups ")[1].split()
    assert len(killed) == 1 and killed[0] in groups
    killed_at = time.monotonic()
    other = [g for g in groups if g != killed[0]]
    assert leased_groups(url, 2) == other  # the killed trainer's group is still leased to it
    while time.monotonic() - killed_at < 10:
        again = leased_groups(url, 2)
        if again:
            break
        time.sleep(0.5)
    assert again == killed, "the lease expired but its group was not served again"
    assert time.monotonic() - killed_at > 2  # not before the lease ran out (6 s from the fetch)
    with Client(url) as c:
        assert c.get_policy()["version"] == 0


def test_a_restarted_trainer_resumes_from_the_last_published_version(
        server: Any, tiny_model: str, tmp_path: Path) -> None:
    url, fake, root = server
    seed_groups(url, 2, prompt_len=8, response_len=6)
    out = root / "run"
    first = finish(trainer(url, tiny_model, out, "--max-versions", "2", "--keep", "2"))
    assert "policy v1 |" in first and "policy v2 |" in first, first
    assert sorted(p.name for p in out.iterdir()) == ["v000001", "v000002"]
    assert not (out / "v000001" / "optimizer.pt").exists() and (out / "v000002" / "optimizer.pt").exists()
    state = torch.load(out / "v000002" / "optimizer.pt", weights_only=True)["state"]
    assert {int(s["step"]) for s in state.values()} == {2}
    seed_groups(url, 1, prompt_len=8, response_len=6)  # sampled by version 2 (older ones are too stale now)
    second = finish(trainer(url, tiny_model, out, "--max-versions", "1", "--keep", "2"))
    assert "resumed from version 2" in second and "policy v3 |" in second, second
    assert sorted(p.name for p in out.iterdir()) == ["v000002", "v000003"]  # keep 2
    state = torch.load(out / "v000003" / "optimizer.pt", weights_only=True)["state"]
    assert {int(s["step"]) for s in state.values()} == {3}  # AdamW went on from its saved state
    with Client(url) as c:
        policy = c.get_policy()
    assert policy["version"] == 3 and policy["weights_path"] == str((out / "v000003").resolve())
    assert fake.fake.reloaded == [str((out / f"v00000{v}").resolve()) for v in (1, 2, 3)]


def test_a_refused_publish_is_a_clear_error_and_records_nothing(server: Any, tiny_model: str) -> None:
    url, fake, root = server
    seed_groups(url, 1, prompt_len=8, response_len=6)
    fake.fake.reload_fails = "cannot load these weights"
    proc = trainer(url, tiny_model, root / "run", "--max-versions", "1")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, out
    assert "steplake: error: the server refused version 1" in out and "keeps serving version 0" in out, out
    assert "Traceback" not in out
    assert not (root / "run" / "v000001").exists()
    with Client(url) as c:
        assert c.get_policy()["version"] == 0
