"""The gateway: OpenAI- and Anthropic-compatible proxy that records every LLM call as a Step.

Endpoints (also under ``/t/{trajectory_id}/...`` and ``/t/{trajectory_id}/g/{group_id}/...``):
``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``, ``POST /v1/messages``,
``POST /v1/responses`` and ``GET /v1/responses/{id}`` (``responses.py``), and the white-box
``POST /api/v1/generate``. The agent receives what the upstream answered, in its own protocol;
fields the gateway asked for only to record exact tokens (``prompt_token_ids``, ``token_ids``,
``logprobs``, the usage chunk of a stream) are removed unless the agent asked for them itself.

Trajectory attribution — first rule that applies wins:

1. **Path**: ``/t/{trajectory_id}/v1/...`` (OpenAI ``base_url``) or ``/t/{trajectory_id}`` (Anthropic
   ``base_url``), optionally ``/t/{trajectory_id}/g/{group_id}/...``.
2. **Headers**: ``X-Steplake-Trajectory``, ``X-Steplake-Group``, ``X-Steplake-Group-Size``,
   ``X-Steplake-Channel``, ``X-Steplake-Metadata`` (a JSON object stored as the step's metadata). Group,
   channel and metadata headers also apply together with rule 1 or 3.
   A named trajectory that does not exist yet is opened by its first step.
3. **Session key**: a call that names no trajectory, made with an API key bound to a session (minted by
   ``POST /api/v1/trajectories {"session_key": true}`` or ``steplake keys create --trajectory``), goes to
   the key's trajectory with its group, channel and metadata; when that trajectory was completed, the
   session goes on in a new trajectory (``continues`` in its metadata) and the key moves to it.
4. **Automatic** (unmodified agents, no path, no headers): every captured call records an *exchange hash*
   — the hash of its normalized request messages plus the assistant answer it got. A new request whose
   history contains an assistant message is looked up prefix by prefix (the longest prefix ending with an
   assistant message first, up to 4): if one equals the *last* exchange of an **open** trajectory, the
   call joins that trajectory as its next step. Otherwise a new trajectory (``tr_<hex>``) opens.
   Normalization: text content as a string or as text parts compare equal, ``None`` equals ``""``,
   surrounding whitespace is ignored, tool-call arguments compare as parsed JSON (key order and spacing
   ignored), tool-call ids, names, reasoning and vendor fields are ignored, ``developer`` reads as
   ``system``; Anthropic requests are converted to chat form first. Two calls continuing the *same* exchange
   at the same time (parallel rollouts from one history) do not both join: the second opens a new
   trajectory. An agent that edits the history it re-sends (drops earlier turns, rewrites answers) opens a
   new trajectory.
5. **n > 1**: choice 0 belongs to the call's trajectory, choice *i* to ``{trajectory_id}-{i}``; all share
   the group (``X-Steplake-Group``/path group, else a new ``gr_<hex>``) whose size is ``n`` (or
   ``X-Steplake-Group-Size``).

Completion follows CONTRACT §3: an explicit ``POST /api/v1/trajectories/{id}/complete`` wins; otherwise a
trajectory idle for ``idle_timeout`` is ``complete`` when its last step ended with ``finish_reason ==
"stop"`` and no tool calls, else ``abandoned``.

Tokens: see ``steplake.upstreams.base`` for how each upstream kind is asked for ids. Steps carry
``token_source`` (``upstream`` / ``tokenizer`` / ``text``) and ``provenance`` (upstream, upstream_kind: the
wire dialect used, upstream_server: the identified server and version such as ``"vllm 0.32.0"`` or null,
protocol, tokenizer, chat_template_hash, logprobs_mode, exchange_hash, attribution, ids_source, warnings).
Missing ids or ids that disagree with ``usage`` are flagged in ``provenance.warnings`` and counted in
``stats()`` — never replaced silently.

Errors come in the agent's protocol: malformed request → 400; upstream 4xx/429/5xx passed on with their
status; unreachable → 502; timeout → 504; model still loading → 503. A failure after the stream started
is sent as a last event (OpenAI ``data: {"error": ...}``, Anthropic ``event: error``) and nothing is
captured. Retries happen only before anything reached the agent, on another upstream.
"""

from .core import Gateway, GatewayFastPath

__all__ = ["Gateway", "GatewayFastPath"]
