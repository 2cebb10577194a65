"""The Store contract (store/base.py docstring), run against every backend."""

from __future__ import annotations

import time
from typing import Any

import pytest

from steplake.errors import ConflictError, NotFoundError
from steplake.records import BatchFilters, BatchIn, CurationIn, FeedbackIn, RewardIn, Step

P = list(range(100, 140))


def st(tid: str, i: int, prompt: list[int], resp: list[int], **kw: Any) -> Step:
    return Step(step_id=kw.pop("step_id", f"{tid}-{i}"), trajectory_id=tid, step_index=i, prompt_ids=prompt,
                response_ids=resp, response_logprobs=[-0.5] * len(resp), **kw)


def test_continuity_classes_and_exact_ids(store: Any) -> None:
    s0 = st("t", 0, P, [1, 2, 3])
    s1 = st("t", 1, P + [1, 2, 3] + [7, 8], [4, 5])                       # clean
    seq1 = P + [1, 2, 3, 7, 8, 4, 5]
    s2 = st("t", 2, seq1[:-3] + [9, 9, 9, 9], [6])                         # realigned: 3 tokens differ
    seq2 = s2.prompt_ids + [6]
    s3 = st("t", 3, seq2[:10] + [55] * 30, [2**31 - 1, -(2**31)])          # fork: most of S differs
    store.append_steps([s0, s1, s2, s3])
    got = store.get_trajectory("t")["steps"]
    assert [s["continuity"] for s in got] == ["first", "clean", "realigned", "fork"]
    assert [s["shared_prefix_len"] for s in got] == [0, len(P) + 3, len(seq1) - 3, 10]
    assert [s["parent_step_id"] for s in got] == [None, "t-0", "t-1", "t-2"]
    for want, have in zip([s0, s1, s2, s3], got, strict=True):
        assert have["prompt_ids"] == want.prompt_ids
        assert have["response_ids"] == want.response_ids
        assert have["response_logprobs"] == pytest.approx(want.response_logprobs)
        assert store.get_step(want.step_id)["prompt_ids"] == want.prompt_ids


def test_realign_boundary_is_eight_tokens(store: Any) -> None:
    store.append_steps([st("r", 0, P, [1])])
    S = P + [1]
    store.append_steps([st("r", 1, S[:-8] + [0], [2])])
    store.append_steps([st("s", 0, P, [1]), st("s", 1, S[:-9] + [0], [2])])
    assert store.get_step("r-1")["continuity"] == "realigned"
    assert store.get_step("s-1")["continuity"] == "fork"


def test_prefix_sharing_stores_only_new_tokens(store: Any) -> None:
    seq: list[int] = list(range(500))
    steps = []
    for i in range(20):
        resp = [1000 + i] * 50
        steps.append(st("long", i, list(seq), resp))
        seq = seq + resp + [2000 + i] * 20
    store.append_steps(steps)
    got = store.get_trajectory("long")["steps"]
    assert all(s["continuity"] == ("first" if i == 0 else "clean") for i, s in enumerate(got))
    assert [s["prompt_ids"] for s in got] == [s.prompt_ids for s in steps]
    stats = store.stats()
    assert stats["continuity"]["clean"] == 19


def test_idempotent_and_conflicting_ids(store: Any) -> None:
    a = st("i", 0, P, [1])
    assert store.append_steps([a]).accepted == 1
    again = store.append_steps([a])
    assert (again.accepted, again.duplicates) == (0, 1)
    with pytest.raises(ConflictError):
        store.append_steps([st("i", 0, P, [2])])
    # a batch with one conflicting step stores nothing of that batch
    with pytest.raises(ConflictError):
        store.append_steps([st("j", 0, P, [1]), st("i", 0, P, [3])])
    assert store.get_trajectory("j") is None
    assert store.stats()["steps"] == 1


def test_same_index_other_id_conflicts(store: Any) -> None:
    store.append_steps([st("k", 0, P, [1])])
    with pytest.raises(ConflictError):
        store.append_steps([st("k", 0, P, [1], step_id="other")])


def test_out_of_order_step_rechains_child(store: Any) -> None:
    s0, s1 = st("o", 0, P, [1]), st("o", 1, P + [1, 2], [3])
    s2 = st("o", 2, P + [1, 2, 3, 4], [5])
    store.append_steps([s0, s2])
    assert store.get_step("o-2")["parent_step_id"] == "o-0"
    store.append_steps([s1])
    got = store.get_step("o-2")
    assert (got["parent_step_id"], got["continuity"], got["prompt_ids"]) == ("o-1", "clean", s2.prompt_ids)


def test_gateway_style_index_assignment(store: Any) -> None:
    for k in range(3):
        store.append_steps([Step(trajectory_id="g", prompt_ids=P + list(range(k * 2)), response_ids=[k, k + 1])])
    got = store.get_trajectory("g")["steps"]
    assert [s["step_index"] for s in got] == [0, 1, 2]


def test_group_readiness_with_abandoned_member(store: Any) -> None:
    store.create_group("G", 3, "train", {}, ["g1", "g2", "g3"])
    store.append_steps([st("g1", 0, P, [1], finish_reason="stop"), st("g2", 0, P, [1], finish_reason="length"),
                        st("g3", 0, P, [1], finish_reason="stop")])
    store.complete_trajectory("g1", 1.0)
    assert store.get_group("G")["status"] == "collecting"
    store.complete_trajectory("g3", 0.0)
    now = time.time() + 1000
    assert store.sweep_idle(300, now=now) == 1  # g2 ended with "length": abandoned
    assert store.get_trajectory("g2", with_steps=False)["status"] == "abandoned"
    g = store.get_group("G")
    assert (g["status"], g["n_complete"], g["n_abandoned"]) == ("ready", 2, 1)
    sel = store.select_batch(BatchIn(channel="train", groups=1))
    assert [t["trajectory_id"] for t in sel.groups[0]["trajectories"]] == ["g1", "g3"]


def test_idle_rule_completes_stop_without_tools(store: Any) -> None:
    store.append_steps([st("a", 0, P, [1], finish_reason="stop"),
                        st("b", 0, P, [1], finish_reason="stop",
                           response={"content": None, "tool_calls": [{"id": "c", "type": "function",
                                                                       "function": {"name": "f", "arguments": "{}"}}]})])
    assert store.sweep_idle(300, now=time.time() + 10) == 0
    assert store.sweep_idle(300, now=time.time() + 1000) == 2
    assert store.get_trajectory("a", with_steps=False)["status"] == "complete"
    assert store.get_trajectory("b", with_steps=False)["status"] == "abandoned"


def _ready_groups(store: Any, n: int, rewards: list[float], prefix: str = "q") -> None:
    for g in range(n):
        tids = [f"{prefix}{g}-{i}" for i in range(len(rewards))]
        store.create_group(f"{prefix}{g}", len(rewards), "train", {}, tids)
        for i, tid in enumerate(tids):
            store.append_steps([st(tid, 0, P, [i])])
            store.complete_trajectory(tid, rewards[i])


def test_curated_untrainable_leaves_next_batch(store: Any) -> None:
    _ready_groups(store, 1, [1.0, 0.0])
    store.curate(CurationIn(trajectory_ids=["q0-1"], trainable=False, reviewer="ann"))
    sel = store.select_batch(BatchIn(groups=1, dry_run=True))
    assert [t["trajectory_id"] for t in sel.groups[0]["trajectories"]] == ["q0-0"]
    assert sel.excluded == {"untrainable": 1}
    hist = store.curation_history("q0-1")
    assert hist[-1]["change"] == {"trainable": False} and hist[-1]["reviewer"] == "ann"


def test_lease_expiry_ack_and_dry_run(store: Any) -> None:
    _ready_groups(store, 2, [1.0, 0.0])
    dry = store.select_batch(BatchIn(groups=2, dry_run=True))
    assert dry.batch_id is None and len(dry.groups) == 2
    assert store.get_group("q0")["status"] == "ready"
    b1 = store.select_batch(BatchIn(groups=1, lease_seconds=0.2))
    b2 = store.select_batch(BatchIn(groups=1, lease_seconds=60))
    assert {b1.groups[0]["group_id"], b2.groups[0]["group_id"]} == {"q0", "q1"}
    assert store.select_batch(BatchIn(groups=1)).groups == []
    store.ack_batch(b2.batch_id)
    time.sleep(0.3)
    b3 = store.select_batch(BatchIn(groups=2, lease_seconds=60))
    assert [g["group_id"] for g in b3.groups] == [b1.groups[0]["group_id"]]  # expired lease served again
    store.ack_batch(b3.batch_id)
    store.ack_batch(b1.batch_id)  # late ack of the superseded lease changes nothing
    assert store.select_batch(BatchIn(groups=2)).groups == []
    assert store.get_group(b2.groups[0]["group_id"])["status"] == "consumed"
    with pytest.raises(NotFoundError):
        store.ack_batch("b_nope")


def test_batch_filters(store: Any) -> None:
    _ready_groups(store, 1, [1.0, 1.0], prefix="z")
    _ready_groups(store, 1, [0.5, 0.0], prefix="v")
    sel = store.select_batch(BatchIn(groups=5, dry_run=True, filters=BatchFilters(drop_zero_variance=True)))
    assert [g["group_id"] for g in sel.groups] == ["v0"] and sel.excluded["zero_variance"] == 1
    sel = store.select_batch(BatchIn(groups=5, dry_run=True, filters=BatchFilters(min_reward=0.4)))
    assert sorted(t["trajectory_id"] for g in sel.groups for t in g["trajectories"]) == ["v0-0", "z0-0", "z0-1"]
    store.curate(CurationIn(trajectory_ids=["z0-0"], quality="bad"))
    sel = store.select_batch(BatchIn(groups=5, dry_run=True, filters=BatchFilters(quality_not_in=["bad"])))
    assert "z0-0" not in [t["trajectory_id"] for g in sel.groups for t in g["trajectories"]]
    store.publish_policy(3, None, None)
    sel = store.select_batch(BatchIn(groups=5, dry_run=True, filters=BatchFilters(max_staleness=2)))
    assert sel.groups == [] and sel.excluded["stale"] == 4


def test_rewards_feedback_and_policy(store: Any) -> None:
    store.append_steps([st("w", 0, P, [1])])
    store.add_reward(RewardIn(trajectory_id="w", name="final_answer", value=1.0, version="1"))
    store.add_reward(RewardIn(trajectory_id="w", name="final_answer", value=0.0, version="2"))
    t = store.get_trajectory("w", with_steps=False)
    assert t["reward"] == 0.0 and t["reward_components"]["final_answer"] == {"value": 0.0, "version": "2"}
    assert [r["version"] for r in store.list_rewards(trajectory_id="w")] == ["1", "2"]
    store.add_reward(RewardIn(step_id="w-0", name="step_ok", value=0.25))
    assert store.get_step("w-0")["reward"] == 0.25
    store.add_feedback(FeedbackIn(trajectory_id="w", kind="thumbs", value="up", author="bo"))
    assert store.list_feedback({"trajectory_id": "w"})[0]["value"] == "up"
    with pytest.raises(NotFoundError):
        store.add_reward(RewardIn(trajectory_id="nope", name="x", value=1))
    store.publish_policy(1, "/w", "first")
    with pytest.raises(ConflictError):
        store.publish_policy(1, None, None)
    store.append_steps([st("w2", 0, P, [1])])
    assert store.get_step("w2-0")["policy_version"] == 1 and store.get_policy()["version"] == 1


def test_complete_unknown_and_closed(store: Any) -> None:
    with pytest.raises(NotFoundError):
        store.complete_trajectory("ghost", None)
    store.append_steps([st("c", 0, P, [1])])
    store.complete_trajectory("c", 1.0)
    with pytest.raises(ConflictError):
        store.append_steps([st("c", 1, P + [1], [2])])


def test_events_in_commit_order(store: Any) -> None:
    first = store.last_event_id()
    store.append_steps([st("e", 0, P, [1])])
    store.complete_trajectory("e", 1.0)
    store.curate(CurationIn(trajectory_ids=["e"], quality="good"))
    ev = store.read_events(first)
    kinds = [e["kind"] for e in ev]
    assert kinds.index("step") < kinds.index("curation")
    assert [e["id"] for e in ev] == sorted(e["id"] for e in ev)
    assert {"group", "trajectory", "step", "curation"} <= set(kinds)


def test_lists_and_cursor(store: Any) -> None:
    for i in range(7):
        store.append_steps([st(f"l{i}", 0, P, [i], metadata={"agent": "a" if i % 2 else "b"})])
    seen, cur = [], None
    while True:
        page = store.list_trajectories({}, cur, 3)
        seen += [t["trajectory_id"] for t in page.items]
        cur = page.next_cursor
        if cur is None:
            break
    assert seen == [f"l{i}" for i in reversed(range(7))]
    page = store.list_steps({"trajectory_id": "l3"}, None, 10, with_ids=False)
    assert "prompt_ids" not in page.items[0]
    store.append_steps([st("msg", 0, P, [1], messages=[{"role": "user", "content": "Feed the Zebra"}])])
    assert [t["trajectory_id"] for t in store.list_trajectories({"q": "zebra"}, None, 100).items] == ["msg"]
    assert store.list_trajectories({"q": "yak"}, None, 100).items == []
    assert len(store.list_trajectories({"agent": "a"}, None, 100).items) == 3


def test_delete_trajectory(store: Any) -> None:
    store.append_steps([st("d", 0, P, [1])])
    store.add_reward(RewardIn(trajectory_id="d", name="x", value=1))
    assert store.delete_trajectory("d") is True
    assert store.get_trajectory("d") is None and store.get_step("d-0") is None
    assert store.list_rewards(trajectory_id="d") == []
    assert store.delete_trajectory("d") is False


def test_keys(store: Any) -> None:
    assert store.has_keys() is False
    rec, secret = store.create_key("trainer", "ci")
    assert store.lookup_key(secret).scope == "trainer"
    assert store.lookup_key(secret + "x") is None
    assert store.revoke_key(rec.key_id) is True
    assert store.lookup_key(secret) is None and store.has_keys() is False


def test_reopen_resumes_open_trajectories(store: Any, tmp_path: Any) -> None:
    store.append_steps([st("re", 0, P, [1])])
    store.close()
    store.open()
    store.append_steps([st("re", 1, P + [1, 9], [2])])
    got = store.get_trajectory("re")
    assert got["status"] == "open" and got["steps"][1]["continuity"] == "clean"


def test_audit_log_pages_newest_first_with_filters(store: Any) -> None:
    from steplake.errors import ValidationError
    from steplake.store.audit import audit_entry

    assert store.list_audit({}, None, 10).items == []
    t0 = time.time()
    made = [store.append_audit(audit_entry("key.create", actor="k1", via="key", target="k9",
                                           summary={"scope": "admin"}, client="10.0.0.7", at=t0 - 100)),
            store.append_audit(audit_entry("trajectory.delete", actor="k1", via="session", target="t1",
                                           client="127.0.0.1", at=t0)),
            store.append_audit(audit_entry("key.revoke", actor="cli", via="cli", target="k9", client="me@host",
                                           at=t0 + 1))]
    assert [m["id"] for m in made] == sorted(m["id"] for m in made)
    page = store.list_audit({}, None, 2)
    assert [e["action"] for e in page.items] == ["key.revoke", "trajectory.delete"] and page.next_cursor
    rest = store.list_audit({}, page.next_cursor, 2)
    assert rest.next_cursor is None and rest.items == [
        {"id": made[0]["id"], "at": t0 - 100, "actor": "k1", "via": "key", "action": "key.create",
         "target": "k9", "summary": {"scope": "admin"}, "client": "10.0.0.7"}]
    assert [e["target"] for e in store.list_audit({"actor": "k1"}, None, 10).items] == ["t1", "k9"]
    assert [e["actor"] for e in store.list_audit({"action": "key.revoke"}, None, 10).items] == ["cli"]
    assert [e["action"] for e in store.list_audit({"since": t0}, None, 10).items] == ["key.revoke",
                                                                                      "trajectory.delete"]
    assert store.list_audit({"action": "nope"}, None, 10).items == []
    for bad in ("x", "0", "-3", str(2**63)):
        with pytest.raises(ValidationError):
            store.list_audit({}, bad, 10)


def _overview_pool(store: Any) -> None:
    """Every funnel stage, two channels, two policy versions, forks; step k is created at 1000 + 10 k."""
    order: list[str] = []

    def add(*steps: Step) -> None:
        store.append_steps(list(steps))
        order.extend(s.step_id for s in steps if s.step_id)

    store.create_group("og", 2, "train", {}, ["o0", "o1"])
    for tid in ("o0", "o1"):
        add(st(tid, 0, P, [1, 2, 3]))
        add(st(tid, 1, P + [1, 2, 3, 7], [4]))
        add(st(tid, 2, [55] * 40, [5], finish_reason="stop"))  # a fork
    store.complete_trajectory("o0", 1.0)
    store.complete_trajectory("o1", 0.25)
    store.publish_policy(1, None, None)
    store.create_group("op", 2, "train", {}, ["p0", "p1"])
    for tid, reward in (("p0", 0.5), ("p1", 0.0)):
        add(st(tid, 0, P, [9]))
        store.complete_trajectory(tid, reward)
    add(st("e0", 0, P, [1], channel="eval", finish_reason="length"))
    assert store.sweep_idle(300, now=time.time() + 1000) == 1  # e0: abandoned
    add(st("open", 0, P, [1], channel="eval"))
    store.curate(CurationIn(trajectory_ids=["o1"], trainable=False))
    store.curate(CurationIn(trajectory_ids=["p0"], quality="good"))
    store.ack_batch(store.select_batch(BatchIn(channel="train", groups=1)).batch_id)
    assert len(store.select_batch(BatchIn(channel="train", groups=1)).groups) == 1
    at = [(1000.0 + 10 * k, sid) for k, sid in enumerate(order)]  # the stores stamp the wall clock
    if hasattr(store, "path"):
        import sqlite3

        raw = sqlite3.connect(store.path)
        with raw:
            raw.executemany("UPDATE steps SET created_at = ? WHERE step_id = ?", at)
        raw.close()
    else:
        with store._conn() as conn:
            conn.cursor().executemany("UPDATE steps SET created_at = %s WHERE step_id = %s", at)


@pytest.mark.postgres
def test_overview_is_the_same_json_on_every_backend(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``read_overview`` counts (never samples) and answers the same JSON from SQLite and PostgreSQL."""
    from steplake.store import overview
    from tests.conftest import BACKENDS, make_store

    answers: dict[str, list[Any]] = {}
    for backend in BACKENDS:
        store = make_store(backend, tmp_path)
        store.open()
        try:
            _overview_pool(store)
            exact = store.read_overview(1, window=600, bucket=30, now=1090.0)
            monkeypatch.setattr(overview, "EXACT_ROWS", 4)  # older buckets counted from the step sequence
            estimated = store.read_overview(1, window=600, bucket=30, now=1090.0)
            monkeypatch.undo()
            empty = store.read_overview(1, window=600, bucket=30, now=1e9)
        finally:
            store.close()
        answers[backend] = [exact, estimated, empty]
        assert exact["sampled"] is False and exact["generated_at"] == 1090.0
        points = exact["series"]["points"]
        assert [p["steps"] for p in points if p["steps"]] == [2, 3, 3, 2] and not any(p["estimated"] for p in points)
        assert [p["forks"] for p in points if p["steps"]] == [0, 1, 1, 0]
        assert sum(p["tokens"] for p in points) == 2 * (43 + 45 + 41) + 4 * 41  # prompt + response ids
        est = [(p["steps"], p["estimated"]) for p in estimated["series"]["points"] if p["steps"]]
        assert est == [(2, True), (3, True), (3, True), (2, False)]
        stages = {s["name"]: s["count"] for s in exact["funnel"]["stages"]}
        assert stages == {"collected": 6, "complete": 4, "rewarded": 4, "curated": 2, "ready": 4, "leased": 2,
                          "consumed": 2}
        assert (exact["funnel"]["abandoned"], exact["funnel"]["untrainable"]) == (1, 1)
        assert exact["rewards"]["n"] == 4 and exact["rewards"]["mean"] == pytest.approx(0.4375)
        versions = exact["policy"]["versions"]
        assert [{k: v[k] for k in ("version", "trajectories", "staleness")} for v in versions] == [
            {"version": 1, "trajectories": 4, "staleness": 0}, {"version": 0, "trajectories": 2, "staleness": 1}]
        by_version = [v["reward"] for v in versions]  # reward by policy version: the rewarded trajectories
        assert sum(rw["n"] for rw in by_version) == 4
        assert sum(rw["mean"] * rw["n"] for rw in by_version if rw["n"]) / 4 == pytest.approx(0.4375)
        assert exact["channels"] == ["eval", "train"]
        assert sum(p["steps"] for p in empty["series"]["points"]) == 0 and empty["funnel"] == exact["funnel"]
    first = next(iter(answers.values()))
    assert all(a == first for a in answers.values()), "backends answer different overviews"


def test_reward_claims_one_owner_per_function_version(store: Any) -> None:
    store.create_trajectory("rc", None, None, None, {})
    keys = [("rc", "judge", "1"), ("rc", "rm", "2")]
    assert sorted(store.claim_rewards(keys, "A", 60.0)) == keys
    assert store.claim_rewards(keys, "B", 60.0) == []  # held by A
    assert sorted(store.claim_rewards(keys, "A", 60.0)) == keys  # A takes its own back (cut off by an outage)
    store.settle_rewards([keys[0]], "A", True)  # scored: never taken again
    store.settle_rewards([keys[1]], "A", False)  # failed: released, a later catch-up retries
    assert store.claim_rewards(keys, "B", 60.0) == [keys[1]]
    assert store.claim_rewards(keys, "A", 60.0) == []
    assert store.claim_rewards(keys, "A", 60.0, now=time.time() + 61) == [keys[1]]  # B's claim went stale
    assert store.claim_rewards([("rc", "rm", "3")], "B", 60.0) == [("rc", "rm", "3")]  # a new version
    store.settle_rewards([keys[1]], "B", True)  # B no longer holds it: nothing changes
    store.settle_rewards([keys[1]], "A", True)
    assert store.claim_rewards(keys, "B", 60.0, now=time.time() + 3600) == []  # done stays done
    store.delete_trajectory("rc")
    assert store.claim_rewards(keys, "B", 60.0) == keys  # deleted with its trajectory
    # a value stored already (its scorer stopped before settling, or an explicit run) is never claimed again
    store.create_trajectory("rc", None, None, None, {})
    store.add_reward(RewardIn(trajectory_id="rc", name="rm", value=0.5, version="2"))
    assert store.claim_rewards(keys, "B", 60.0) == [keys[0]]
    assert store.claim_rewards([("rc", "rm", "2")], "C", 60.0, now=time.time() + 3600) == []


def test_reward_claims_race(store: Any) -> None:
    import threading

    keys = [(f"t{i}", "rm", "1") for i in range(40)]
    won: dict[str, list[tuple[str, str, str]]] = {}
    barrier = threading.Barrier(4)

    def claim(owner: str) -> None:
        barrier.wait()
        won[owner] = store.claim_rewards(keys, owner, 60.0)

    threads = [threading.Thread(target=claim, args=(f"o{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    every = [k for ks in won.values() for k in ks]
    assert len(won) == 4 and sorted(every) == sorted(keys)  # each key exactly once


# -- the rules of steplake/rules/, one copy that both backends apply ------------------------------------------
def test_every_weight_zero_means_no_reward(store: Any) -> None:
    from steplake.rules.rewards import combine

    store.reward_weights = {"judge": 0.0, "length": 0.0}
    store.append_steps([st("z", 0, P, [1]), st("zz", 0, P, [1])])
    store.add_reward(RewardIn(trajectory_id="z", name="judge", value=1.0))
    store.add_reward(RewardIn(trajectory_id="z", name="length", value=-0.5))
    t = store.get_trajectory("z", with_steps=False)
    assert t["reward"] is None and combine({"judge": 1.0, "length": -0.5}, store.reward_weights) is None
    assert t["reward_components"] == {"judge": {"value": 1.0, "version": "1"},
                                      "length": {"value": -0.5, "version": "1"}}
    store.add_reward(RewardIn(trajectory_id="z", name="style", value=0.25))  # unlisted: weight 1
    assert store.get_trajectory("z", with_steps=False)["reward"] == 0.25
    store.add_reward(RewardIn(trajectory_id="zz", name="judge", value=1.0))
    store.complete_trajectory("zz", -1.0)  # an explicit reward wins over the components
    assert store.get_trajectory("zz", with_steps=False)["reward"] == -1.0
    store.append_steps([st("x", 0, P, [1], channel="zw")])
    store.add_reward(RewardIn(trajectory_id="x", name="judge", value=1.0))
    store.complete_trajectory("x", None)  # complete, every weight 0: no reward, so no batch takes it
    sel = store.select_batch(BatchIn(channel="zw", groups=1, dry_run=True))
    assert sel.groups == [] and sel.excluded == {"no_reward": 1, "empty_group": 1}


@pytest.mark.parametrize(("finish", "tools", "want"), [("stop", False, "complete"), ("stop", True, "abandoned"),
                                                        ("length", False, "abandoned"), (None, False, "abandoned")])
def test_idle_rule_follows_the_last_step(store: Any, finish: str | None, tools: bool, want: str) -> None:
    from steplake.rules.status import idle_outcome

    call = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    last: dict[str, Any] = {"finish_reason": finish}
    if tools:
        last["response"] = {"content": None, "tool_calls": call}
    store.append_steps([st("i", 0, P, [1], finish_reason="length"), st("i", 1, P + [1], [2], **last)])
    assert store.sweep_idle(300, now=time.time() + 1000) == 1
    assert store.get_trajectory("i", with_steps=False)["status"] == want == idle_outcome(finish, int(tools))


def test_reopened_member_returns_a_ready_group_to_collecting(store: Any) -> None:
    store.create_group("R", 2, "train", {}, ["r1", "r2"])
    store.append_steps([st("r1", 0, P, [1], finish_reason="stop"), st("r2", 0, P, [1], finish_reason="length")])
    store.complete_trajectory("r1", 1.0)
    assert store.sweep_idle(300, now=time.time() + 1000) == 1
    assert store.get_group("R")["status"] == "ready"
    store.append_steps([st("r2", 1, P + [1], [2])])  # the agent came back: r2 reopens
    t = store.get_trajectory("r2", with_steps=False)
    assert (t["status"], t["completed_at"]) == ("open", None)
    g = store.get_group("R")
    assert (g["status"], g["n_complete"], g["n_abandoned"]) == ("collecting", 1, 0)
    store.complete_trajectory("r2", 0.0, {"judge": "late"})
    assert store.get_group("R")["status"] == "ready"


def test_tag_merge_and_history(store: Any) -> None:
    store.append_steps([st("tg", 0, P, [1])])
    store.curate(CurationIn(trajectory_ids=["tg"], tags_add=["a", "b", "a"], note="first look"))
    store.curate(CurationIn(trajectory_ids=["tg"], tags_add=["c"], tags_remove=["a"], reviewer="ann"))
    store.curate(CurationIn(step_ids=["tg-0"], tags_add=["s"], quality="good", trainable=False))
    t = store.get_trajectory("tg")
    c = t["curation"]
    assert (c["tags"], c["note"], c["quality"], c["trainable"]) == (["b", "c"], "first look", "unreviewed", True)
    c = t["steps"][0]["curation"]
    assert (c["tags"], c["quality"], c["trainable"]) == (["s"], "good", False)
    hist = store.curation_history("tg")
    assert [h["before"]["tags"] for h in hist] == [[], ["a", "b"]]
    assert hist[1]["change"] == {"tags_add": ["c"], "tags_remove": ["a"]} and hist[1]["before"]["note"] == "first look"


def test_complete_merges_metadata(store: Any) -> None:
    store.append_steps([st("md", 0, P, [1], metadata={"agent": "a", "task": 1})])
    store.complete_trajectory("md", None, {"task": 2, "score": "x"})
    assert store.get_trajectory("md", with_steps=False)["metadata"] == {"agent": "a", "task": 2, "score": "x"}


def test_groups_served_follow_the_lease_rule(store: Any) -> None:
    from steplake.rules.leases import group_servable

    _ready_groups(store, 4, [1.0, 0.0], prefix="L")
    short = store.select_batch(BatchIn(channel="train", groups=1, lease_seconds=0.2))
    held = store.select_batch(BatchIn(channel="train", groups=1, lease_seconds=60))
    done = store.select_batch(BatchIn(channel="train", groups=1, lease_seconds=60))
    store.ack_batch(done.batch_id)
    store.create_group("Lc", 2, "train", {}, ["Lc-0", "Lc-1"])
    time.sleep(0.3)
    now = time.time()
    groups = [store.get_group(g) for g in ("L0", "L1", "L2", "L3", "Lc")]
    want = sorted(g["group_id"] for g in groups if group_servable(g["status"], g["lease_expires_at"], now))
    sel = store.select_batch(BatchIn(channel="train", groups=10, dry_run=True))
    assert sorted(g["group_id"] for g in sel.groups) == want == sorted([short.groups[0]["group_id"], "L3"])
    assert held.groups[0]["group_id"] not in want
