"""Interactive Claude Code against a mock of the Anthropic Messages API, with our server as its
only MCP server. Claude Code runs in a pseudo-terminal (interactive mode is the one that speaks
the MCP tasks extension); the mock plays the model:

1. the user's prompt gets a ToolSearch call loading the MCP tool (Claude Code defers MCP tools);
2. its result gets a call of the tool with TOOL_INPUT;
3. the tool's result, and the task notification Claude Code sends when the task ends, get text.

When Claude Code shows a dialog ("... requests your input"), the keys in DIALOG_KEYS (a comma
list of up, down, enter) are typed into it once.

Usage: claude_code.py CLAUDE_BIN WORKDIR MCP_CONFIG TOOL TOOL_INPUT_JSON TIMEOUT_SECONDS

It stops Claude Code after TIMEOUT_SECONDS in all, notification or not.

Prints one JSON document: every request the mock saw (the messages after the system prompt)
and whether a task notification came.
"""

import http.server
import json
import os
import pty
import re
import select
import sys
import tempfile
import threading
import time

claude, workdir, mcp_config, tool, tool_input, timeout = sys.argv[1:7]
tool_input = json.loads(tool_input)
timeout = float(timeout)
KEY = "sk-ant-api03-codex-async-mcp-tests-0123456789"
requests = []
lock = threading.Lock()
ids = iter(range(1, 1_000_000))


def events(blocks, stop):
    out = [{"type": "message_start", "message": {
        "id": f"msg_{next(ids)}", "type": "message", "role": "assistant", "model": "claude-mock",
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 1}}}]
    for i, block in enumerate(blocks):
        if block["type"] == "text":
            out.append({"type": "content_block_start", "index": i,
                        "content_block": {"type": "text", "text": ""}})
            out.append({"type": "content_block_delta", "index": i,
                        "delta": {"type": "text_delta", "text": block["text"]}})
        else:
            out.append({"type": "content_block_start", "index": i, "content_block": {
                "type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}})
            out.append({"type": "content_block_delta", "index": i, "delta": {
                "type": "input_json_delta", "partial_json": json.dumps(block["input"])}})
        out.append({"type": "content_block_stop", "index": i})
    out.append({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": 5}})
    out.append({"type": "message_stop"})
    return out


def turn_of(body):
    """The newest message that is not Claude Code's own system note, as text."""
    turns = [m for m in body.get("messages", []) if m.get("role") != "system"]
    return json.dumps(turns[-1]) if turns else ""


def answer(body):
    last = turn_of(body)
    names = [t.get("name") for t in body.get("tools", [])]
    if "<task-notification>" in last or '"toolu_mcp' in last:
        return [{"type": "text", "text": "noted"}], "end_turn"
    if '"toolu_search' in last:
        call = {"type": "tool_use", "id": f"toolu_mcp_{next(ids)}", "name": tool, "input": tool_input}
        return [call], "tool_use"
    if "RUN-CODEX" in last and "ToolSearch" in names:
        search = {"type": "tool_use", "id": f"toolu_search_{next(ids)}", "name": "ToolSearch",
                  "input": {"query": "select:" + tool}}
        return [search], "tool_use"
    return [{"type": "text", "text": "ok"}], "end_turn"


class Model(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, kind, data):
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.reply(404, "text/plain", b"")

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if "count_tokens" in self.path:
            return self.reply(200, "application/json", b'{"input_tokens": 10}')
        with lock:
            requests.append(turn_of(body))
        blocks, stop = answer(body)
        if body.get("stream"):
            data = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events(blocks, stop))
            return self.reply(200, "text/event-stream", data.encode())
        message = {"id": f"msg_{next(ids)}", "type": "message", "role": "assistant",
                   "model": "claude-mock", "content": blocks, "stop_reason": stop,
                   "usage": {"input_tokens": 10, "output_tokens": 5}}
        self.reply(200, "application/json", json.dumps(message).encode())


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Model)
threading.Thread(target=server.serve_forever, daemon=True).start()

home = tempfile.mkdtemp(prefix="claude-home-")
with open(os.path.join(home, ".claude.json"), "w") as f:
    json.dump({
        "hasCompletedOnboarding": True,
        "lastOnboardingVersion": "2.1.332",
        "theme": "dark",
        "customApiKeyResponses": {"approved": [KEY[-20:]], "rejected": []},
        "projects": {workdir: {"hasTrustDialogAccepted": True,
                               "hasCompletedProjectOnboarding": True}},
    }, f)
# Claude Code behaves otherwise on CI (it takes no typed prompt when CI is set): it runs here as
# on a user's terminal.
env = {k: v for k, v in os.environ.items()
       if k not in ("CI", "CONTINUOUS_INTEGRATION", "BUILD_NUMBER", "RUN_ID")
       and not k.startswith(("GITHUB_", "GITLAB_", "BUILDKITE", "CIRCLECI", "TRAVIS", "JENKINS"))}
env = dict(env, HOME=home, ANTHROPIC_API_KEY=KEY, TERM="xterm-256color",
           ANTHROPIC_BASE_URL=f"http://127.0.0.1:{server.server_address[1]}",
           DISABLE_AUTOUPDATER="1", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
           DISABLE_TELEMETRY="1", DISABLE_ERROR_REPORTING="1")
argv = [claude, "--mcp-config", mcp_config, "--allowedTools", tool]

pid, fd = pty.fork()
if pid == 0:
    os.chdir(workdir)
    os.execvpe(argv[0], argv, env)

screen = b""


def pump(seconds):
    """Reads the terminal for `seconds`; False once Claude Code has exited."""
    global screen
    end = time.time() + seconds
    while time.time() < end:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return False
            if not chunk:
                return False
            screen += chunk
    return True


def notified():
    with lock:
        return any("<task-notification>" in r for r in requests)


# Everything, start-up included, ends by this deadline, so the caller always gets a report.
deadline = time.time() + timeout
# The prompt box is ready once Claude Code has drawn it.
while b"for agents" not in screen and time.time() < deadline and pump(0.2):
    pass
os.write(fd, b"RUN-CODEX please")
pump(0.5)


def prompted():
    with lock:
        return any("RUN-CODEX" in r for r in requests)


# Enter again until the model has the prompt: one typed while Claude Code redraws can be lost.
while time.time() < deadline and not prompted():
    os.write(fd, b"\r")
    if not pump(2):
        break
KEYS = {"up": b"\x1b[A", "down": b"\x1b[B", "enter": b"\r"}
dialog_keys = [KEYS[k] for k in os.environ.get("DIALOG_KEYS", "").split(",") if k]
while time.time() < deadline and not notified() and pump(0.2):
    # The dialog's last line is drawn once the whole dialog is.
    if dialog_keys and b"requests your input" in screen and b"to answer later" in screen:
        pump(1)
        for key in dialog_keys:
            os.write(fd, key)
            pump(0.5)
        dialog_keys = []
try:
    os.kill(pid, 9)
except ProcessLookupError:
    pass
with lock:
    seen = list(requests)
text = re.sub(rb"\x1b\[[0-9;?]*[a-zA-Z]", b"", screen).decode("utf-8", "replace")
print(json.dumps({"notified": notified(), "requests": seen, "screen": text[-2000:]}))
