"""``steplake demo``: real agents run through the gateway on embedded defaults.

It starts ``steplake serve`` (SQLite file, the embedded SmolLM2 model as upstream, a ``final_answer``
reward on channel ``train``), then runs arithmetic tasks: each task is a GRPO group of rollouts; half of
the groups use an agent written with the ``openai`` SDK, half one written with the ``anthropic`` SDK. An
agent asks the model, which must call a ``calculator`` tool; the agent runs the tool and sends the result
back; the model answers. The agent then marks its trajectory complete; the server scores it in the
background. A summary table, a GRPO batch preview and the dashboard/API URLs (one a line, never wrapped)
close the run. The server runs with ``--prompt-mode tokens`` (unless ``--prompt-mode`` is given): each later
turn extends exactly the ids the model sampled, so it is ``clean``; the summary names the reason of every
later step that is not. In a terminal the server then keeps serving them until Ctrl-C; elsewhere (or with
``--no-keep-serving``) it stops and the summary says so (``--keep-serving`` keeps it anywhere).
"""

from __future__ import annotations

import ast
import json
import operator
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .config import Settings
from .errors import ConfigError

SYSTEM = ("You are a careful math assistant. Use the calculator tool for arithmetic, then give the result "
          "as 'Answer: <number>'.")
CALCULATOR = {"name": "calculator", "description": "Evaluate an arithmetic expression such as 37*3.",
              "parameters": {"type": "object", "properties": {"expression": {"type": "string"}},
                             "required": ["expression"]}}
REWARDS = {"channels": {"train": {"functions": [{"name": "final_answer", "weight": 1.0}]}}}
_OPS: dict[type, Callable[[Any, Any], Any]] = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
                                               ast.Div: operator.truediv}


def calculator(expression: str) -> str:
    """Evaluate + - * / on numbers; anything else is an error message (as a real tool would answer)."""
    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return float(_OPS[type(node.op)](ev(node.left), ev(node.right)))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        raise ValueError("only numbers and + - * / are supported")
    try:
        v = ev(ast.parse(str(expression).replace("x", "*").replace("×", "*"), mode="eval").body)
        return str(int(v)) if float(v).is_integer() else f"{v:.4g}"
    except (ValueError, SyntaxError, ZeroDivisionError, RecursionError) as e:
        return f"error: {e}"


def make_tasks(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(11, 49), rng.randint(2, 9)
        op = rng.choice(["*", "+", "-"])
        out.append({"question": f"What is {a}{op}{b}?", "ground_truth": str(eval(f"{a}{op}{b}"))})  # noqa: S307
    return out


def openai_agent(base_url: str, api_key: str, task: dict[str, Any], max_tokens: int, seed: int) -> str:
    from openai import OpenAI

    client: Any = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=300)
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM},
                                      {"role": "user", "content": task["question"]}]
    tools = [{"type": "function", "function": CALCULATOR}]
    first = client.chat.completions.create(
        model="smollm2", messages=messages, tools=tools,
        tool_choice={"type": "function", "function": {"name": "calculator"}},
        max_tokens=max_tokens, temperature=1.0, seed=seed)
    msg = first.choices[0].message
    messages.append(msg.model_dump(exclude_none=True))
    for call in msg.tool_calls or []:
        try:
            args = json.loads(call.function.arguments)
            result = calculator(args.get("expression", ""))
        except (ValueError, AttributeError):
            result = "error: arguments are not valid JSON"
        messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    second = client.chat.completions.create(model="smollm2", messages=messages, tools=tools,
                                            max_tokens=max_tokens, temperature=1.0, seed=seed + 1)
    return second.choices[0].message.content or ""


def anthropic_agent(base_url: str, api_key: str, task: dict[str, Any], max_tokens: int, seed: int) -> str:
    from anthropic import Anthropic

    client: Any = Anthropic(base_url=base_url, api_key=api_key, max_retries=0, timeout=300)
    tools = [{"name": CALCULATOR["name"], "description": CALCULATOR["description"],
              "input_schema": CALCULATOR["parameters"]}]
    messages: list[dict[str, Any]] = [{"role": "user", "content": task["question"]}]
    first = client.messages.create(model="smollm2", system=SYSTEM, messages=messages,
                                   tools=tools, tool_choice={"type": "tool", "name": "calculator"},
                                   max_tokens=max_tokens, extra_body={"temperature": 1.0})
    messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]})
    results = []
    for block in first.content:
        if block.type == "tool_use":
            expr = block.input.get("expression", "") if isinstance(block.input, dict) else ""
            results.append({"type": "tool_result", "tool_use_id": block.id, "content": calculator(str(expr))})
    if results:
        messages.append({"role": "user", "content": results})
    else:
        messages.append({"role": "user", "content": "Please give the final answer."})
    second = client.messages.create(model="smollm2", system=SYSTEM, messages=messages,
                                    tools=tools, max_tokens=max_tokens,
                                    extra_body={"temperature": 1.0})
    return "".join(b.text for b in second.content if b.type == "text")


def demo_prompt_mode(settings: Settings) -> str:
    """``tokens`` (CONTRACT: the demo uses the token path) unless ``--prompt-mode`` was given."""
    return settings.prompt_mode if "prompt_mode" in settings.model_fields_set else "tokens"


def not_clean_reason(step: dict[str, Any]) -> str | None:
    """Why a later step is not ``clean`` (None when it is, or when it is a first step): the prompt mode's
    reason when it did not take the token path, else its continuity and how its prompt was built."""
    cont = step.get("continuity")
    if cont in ("clean", "first") or step.get("step_index", 0) == 0:
        return None
    prov = step.get("provenance") or {}
    mode = prov.get("prompt_mode")
    if mode is None:
        return f"{cont}: no prompt mode recorded (this protocol is not on the token path)"
    if mode != "tokens":
        return f"{cont}: chat mode ({prov.get('prompt_mode_reason') or 'no reason recorded'})"
    return f"{cont}: tokens, prompt {prov.get('prompt_build') or '?'}"


def start_server(settings: Settings, workdir: Path, console: Console, *, rewards: dict[str, Any] | None = None,
                 extra_args: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], str]:
    """``steplake serve`` for the demo (``rewards``: the reward config, default the calculator task's)."""
    cfg = workdir / "demo-config.json"
    cfg.write_text(json.dumps({"rewards": rewards or REWARDS}))
    port = settings.port
    cmd = [sys.executable, "-m", "steplake", "serve", "--db", settings.db, "--port", str(port),
           "--host", settings.host, "--config", str(cfg), "--idle-timeout", str(settings.idle_timeout)]
    for u in settings.upstream:
        cmd += ["--upstream", u]
    cmd += ["--prompt-mode", demo_prompt_mode(settings)]
    for flag, value in (("--renderer", settings.renderer), ("--tokenizer", settings.tokenizer)):
        if value:
            cmd += [flag, value]
    if settings.model_gguf:
        cmd += ["--model-gguf", settings.model_gguf]
    cmd += list(extra_args)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    log = open(workdir / "server.log", "ab")  # noqa: SIM115 - lives as long as the server
    try:
        from .model.lifeline import die_with_this_process
    except ImportError:  # a build without the embedded model package
        preexec = None
    else:
        preexec = die_with_this_process()  # a killed demo takes its server (and the model) along
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, preexec_fn=preexec)  # noqa: PLW1509
    url = f"http://{'127.0.0.1' if settings.host in ('0.0.0.0', '::') else settings.host}:{port}"
    with console.status("starting steplake serve and loading the embedded model (~30 s) ..."):
        deadline = time.time() + 300
        while time.time() < deadline:
            if proc.poll() is not None:
                raise ConfigError(f"steplake serve exited with {proc.returncode}; see {workdir / 'server.log'}")
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    proc.kill()
    raise ConfigError(f"the server did not become ready in 300 s; see {workdir / 'server.log'}")


def run_rollouts(url: str, tasks: list[dict[str, Any]], rollouts: int, max_tokens: int,
                 console: Console) -> list[dict[str, Any]]:
    from .client import Client

    client = Client(url)
    jobs: list[tuple[str, str, dict[str, Any], str, int]] = []
    for i, task in enumerate(tasks):
        sdk = "openai" if i % 2 == 0 else "anthropic"
        g = client.create_group(rollouts, metadata={"task": task["question"], "ground_truth": task["ground_truth"],
                                                    "agent": f"calculator-{sdk}"})
        for k, t in enumerate(g["trajectories"]):
            base = t["base_url"] if sdk == "openai" else t["anthropic_base_url"]
            jobs.append((sdk, base, task, t["trajectory_id"], 1000 * i + 10 * k))
    results: list[dict[str, Any]] = []
    with Progress(TextColumn("[bold]rollouts"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as bar:
        prog = bar.add_task("rollouts", total=len(jobs))

        def run(job: tuple[str, str, dict[str, Any], str, int]) -> dict[str, Any]:
            sdk, base, task, tid, seed = job
            agent = openai_agent if sdk == "openai" else anthropic_agent
            try:
                answer, error = agent(base, "demo", task, max_tokens, seed), None
            except Exception as e:  # an agent failure is data too; the run goes on
                answer, error = "", f"{type(e).__name__}: {e}"
            client.complete(tid)
            bar.advance(prog)
            return {"sdk": sdk, "trajectory_id": tid, "answer": answer, "error": error, **task}
        with ThreadPoolExecutor(max_workers=4) as ex:
            results = list(ex.map(run, jobs))
    client.close()
    return results


@dataclass
class DemoSummary:
    """What the demo prints at the end (gathered from the server by ``collect_summary``)."""

    url: str
    db: str
    log: str
    sdk_rows: list[tuple[str, ...]] = field(default_factory=list)
    batch_rows: list[tuple[str, str, str]] = field(default_factory=list)
    committed: int = 0
    failed: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    prompt_mode: str = "tokens"
    later: int = 0  # steps after a trajectory's first
    later_clean: int = 0
    on_ids: int = 0  # steps whose prompt the gateway built from token ids
    not_clean: dict[str, int] = field(default_factory=dict)  # later steps that are not clean, per reason


def collect_summary(url: str, db: str, log: str, results: list[dict[str, Any]]) -> DemoSummary:
    from .client import Client

    client = Client(url)
    deadline = time.time() + 60  # background rewards land right after completion
    while time.time() < deadline:
        ts = [client.get_trajectory(r["trajectory_id"], steps=False) for r in results]
        if all(t["reward"] is not None for t in ts):
            break
        time.sleep(0.5)
    stats = client.stats()
    out = DemoSummary(url=url, db=db, log=log, committed=stats["captures"]["committed"],
                      failed=stats["captures"]["failed"])
    for sdk in ("openai", "anthropic"):
        mine = [r for r in results if r["sdk"] == sdk]
        trajs = [client.get_trajectory(r["trajectory_id"]) for r in mine]
        steps = [s for t in trajs for s in t["steps"]]
        rewards = [t["reward"] for t in trajs if t["reward"] is not None]
        cont = [s["continuity"] for s in steps]
        later = [s for s in steps if s["step_index"] > 0]
        out.later += len(later)
        out.later_clean += sum(1 for s in later if s["continuity"] == "clean")
        for s in later:
            reason = not_clean_reason(s)
            if reason is not None:
                out.not_clean[f"{sdk} {reason}"] = out.not_clean.get(f"{sdk} {reason}", 0) + 1
        out.on_ids += sum(1 for s in steps if (s.get("provenance") or {}).get("prompt_mode") == "tokens")
        out.sdk_rows.append((sdk, str(len(trajs)), str(len(steps)),
                             f"{sum(len(s['prompt_ids']) + len(s['response_ids']) for s in steps):,}",
                             f"{sum(rewards) / len(rewards):.2f}" if rewards else "-", str(cont.count("clean")),
                             str(cont.count("realigned")), str(cont.count("fork")),
                             str(sum(1 for r in mine if r["error"]))))
    batch = client.fetch_batch(groups=len({r["question"] for r in results}), recipe="grpo", dry_run=True)
    for g in batch["groups"]:
        ts = g["trajectories"]
        task = ts[0]["metadata"].get("task", g["group_id"]) if ts else g["group_id"]
        out.batch_rows.append((task, " ".join(f"{t['reward']:.0f}" for t in ts),
                               " ".join(f"{t['advantage']:+.2f}" for t in ts)))
    out.excluded = dict(batch["excluded"] or {})
    client.close()
    return out


def _line(console: Console, text: str) -> None:
    """One line printed as is: never wrapped (a URL or a path stays whole) and never read as markup."""
    console.print(text, soft_wrap=True, markup=False, highlight=False)


def print_summary(console: Console, summary: DemoSummary, *, keep_serving: bool) -> None:
    """The closing tables, then the URLs and paths one a line, then whether the server keeps serving them."""
    table = Table(title="steplake demo")
    for col in ("SDK", "traj", "steps", "tokens", "reward", "clean", "realign", "fork", "errors"):
        table.add_column(col, justify="right" if col != "SDK" else "left")
    for row in summary.sdk_rows:
        table.add_row(*row)
    console.print(table)
    _line(console, f"prompt mode {summary.prompt_mode}: {summary.on_ids} steps on token ids; later steps clean "
                   f"{summary.later_clean}/{summary.later}, not clean {sum(summary.not_clean.values()) or 'none'}")
    for reason, n in summary.not_clean.items():
        _line(console, f"  {n} x {reason}")
    bt = Table(title="GRPO batch preview (dry run)")
    for col in ("task", "rewards", "advantages"):
        bt.add_column(col)
    for brow in summary.batch_rows:
        bt.add_row(*brow)
    console.print(bt)
    excluded = ", ".join(f"{k} {v}" for k, v in summary.excluded.items()) or "nothing"
    _line(console, f"captures committed {summary.committed}, failed {summary.failed}; "
                   f"excluded from the batch: {excluded}")
    u = summary.url
    for label, value in (("Dashboard:", f"{u}/"), ("API:", f"{u}/api/v1/trajectories"), ("OpenAPI:", f"{u}/docs"),
                         ("Database:", summary.db), ("Server log:", summary.log)):
        _line(console, f"{label:<12}{value}")
    if keep_serving:
        _line(console, "The server keeps serving these URLs; Ctrl-C stops it.")
    else:
        _line(console, "The server stops now: these URLs will not answer. To keep it up, run")
        _line(console, "  steplake demo --keep-serving")
        _line(console, "or browse this pool again with")
        _line(console, f"  steplake serve --db {summary.db}")


def run_demo(settings: Settings, *, keep_serving: bool | None = None, tasks: int = 4, rollouts: int = 4,
             max_tokens: int = 48) -> None:
    """Run the demo; ``keep_serving=None`` keeps the server up when run in a terminal (stdin and stdout)."""
    console = Console()
    if keep_serving is None:
        keep_serving = sys.stdin.isatty() and sys.stdout.isatty()
    workdir = Path(tempfile.mkdtemp(prefix="steplake-demo-"))
    if settings.db == Settings.model_fields["db"].default:
        settings = settings.model_copy(update={"db": str(workdir / "demo.db")})
    proc, url = start_server(settings, workdir, console)
    _line(console, f"steplake serve is up at {url}")
    _line(console, f"  database {settings.db}")
    _line(console, f"  log      {workdir / 'server.log'}")
    try:
        results = run_rollouts(url, make_tasks(tasks), rollouts, max_tokens, console)
        summary = collect_summary(url, settings.db, str(workdir / "server.log"), results)
        summary.prompt_mode = demo_prompt_mode(settings)
        print_summary(console, summary, keep_serving=keep_serving)
        if keep_serving:
            proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_server(proc)


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the demo's server (and its model), SIGKILL after 20 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


__all__ = ["run_demo", "start_server", "stop_server", "calculator", "make_tasks", "DemoSummary", "collect_summary",
           "print_summary", "demo_prompt_mode", "not_clean_reason"]
