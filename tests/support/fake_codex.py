#!/usr/bin/env python3
"""A scriptable stand-in for `codex mcp-server`, for what the real one cannot be made to do on demand.

`codex --version` prints `codex-cli $FAKE_CODEX_VERSION` (default 0.153.4), or `$FAKE_CODEX_BANNER`
verbatim when that is set. `codex [-c k=v]... mcp-server` speaks MCP over stdio like Codex 0.153.
`$FAKE_CODEX_HANDSHAKE=exit` makes it exit before answering `initialize`.
`codex app-server` speaks app-server's JSON-RPC only when `$FAKE_CODEX_APP_SERVER` is set; its
turns answer "fake app: PROMPT", and a prompt `ASK: METHOD` sends that request to the client
first and answers with what came back.
`codex exec --json ... [resume ID] -- PROMPT` prints the JSONL of a turn that answers
"fake exec: PROMPT"; the prompt `IGNORE_TERM` starts a turn that ignores SIGTERM and never ends.
`$FAKE_CODEX_PID_DIR` makes every process but `--version` leave its pid there as a file.
`$FAKE_CODEX_STALL=1` makes mcp-server stop reading its stdin once it has answered `initialize`.
`$FAKE_CODEX_SLOW_RESTART=1` (with the pid dir) makes an mcp-server that is not the first one
started there take 60 s to answer `initialize`, saying so on stderr.
`$FAKE_CODEX_GATE=path` makes mcp-server answer `initialize` only once that file exists.

Each mcp-server `tools/call` is scripted by its prompt:
  GARBAGE           write lines that are not JSON-RPC, then answer normally
  HANG              start the turn and never answer, even when cancelled
  LATE_ABORT        start the turn and never answer; its `turn_aborted` comes only when the next
                    call for the thread arrives (a cancel Codex confirms late)
  CRASH             write to stderr and exit 3 in the middle of the turn
  FLOOD: n          send n agent_message_delta events ("0", "1", ...), then answer
  SLEEP: s ...      answer "slept" after s seconds
  TIME_AFTER: s     after s seconds, answer with the time it answers (seconds since the epoch)
  ASK_UNKNOWN       send a request with a method nobody knows, answer with what came back
  anything else     answer "fake: <prompt>"

Each app-server `turn/start` is scripted by its prompt:
  ASK: METHOD       send that request to the client first, answer with what came back
  HANG              start the turn and never end it; `turn/interrupt` of it is never answered
  LATE_INTERRUPT    start the turn; `turn/interrupt` is answered, but the turn's `turn/completed`
                    comes only when the next `turn/start` for the thread arrives
  SLOW_START        say so on stderr, then answer `turn/start` only after 60 s
  TIME_AFTER: s     after s seconds, end the turn (its message and its end in one write) with
                    the time it ends it (seconds since the epoch) as its message
  anything else     answer "fake app: <prompt>"
"""

import json
import os
import signal
import sys
import threading
import time

write_lock = threading.Lock()
late = {}  # thread id -> what to send when the thread's next turn arrives
pending = {}  # our request id -> threading.Event and slot for the answer
next_request = [0]
thread_counter = [0]


NOW = "@now@"  # in a message to send_stamped: the time it is written


def send(*messages):
    """Writes the messages, one line each, in one write."""
    with write_lock:
        sys.stdout.write("".join(json.dumps(message) + "\n" for message in messages))
        sys.stdout.flush()


def send_stamped(*messages):
    """Like send, with each NOW made the time of the write (seconds since the epoch). The lines
    are built first: in a thread just woken that took this fake 130 to 170 us, which a benchmark
    timing the server from that moment must not count."""
    lines = "".join(json.dumps(message) + "\n" for message in messages)
    with write_lock:
        sys.stdout.write(lines.replace(NOW, f"{time.time():.6f}"))
        sys.stdout.flush()


def raw(line):
    with write_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def event_message(request_id, thread_id, msg, turn_id=None):
    """A codex/event as 0.153 sends it: `id` is Codex's turn id ("" for session-level events)."""
    turn_id = f"turn-{request_id}" if turn_id is None else turn_id
    return {"jsonrpc": "2.0", "method": "codex/event",
            "params": {"_meta": {"requestId": request_id, "threadId": thread_id}, "id": turn_id, "msg": msg}}


def event(request_id, thread_id, msg, turn_id=None):
    send(event_message(request_id, thread_id, msg, turn_id))


def answer(request_id, thread_id, text, is_error=False, send=send):
    """Ends a turn as 0.153 does: `task_complete`, then the call's answer (an error has no
    `task_complete`), in one write by `send`."""
    result = {"content": [{"type": "text", "text": text}],
              "structuredContent": {"threadId": thread_id, "content": text}}
    ends = [] if is_error else [event_message(request_id, thread_id, {
        "type": "task_complete", "turn_id": f"turn-{request_id}", "last_agent_message": text})]
    if is_error:
        result["isError"] = True
    send(*ends, {"jsonrpc": "2.0", "id": request_id, "result": result})


def ask(method, params):
    """Sends a request to the client and waits for its answer."""
    request_id = next_request[0]
    next_request[0] += 1
    done = threading.Event()
    pending[request_id] = [done, None]
    send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
    done.wait(30)
    return pending.pop(request_id)[1]


def run_turn(request_id, arguments):
    prompt = arguments.get("prompt", "")
    thread_id = arguments.get("threadId")
    if thread_id is None:
        thread_counter[0] += 1
        thread_id = f"fake-thread-{thread_counter[0]}"
        event(request_id, thread_id, {"type": "session_configured", "thread_id": thread_id, "model": "fake"},
              turn_id="")
    event(request_id, thread_id, {"type": "task_started", "turn_id": f"turn-{request_id}"})
    verb, _, arg = prompt.partition(":")
    verb, arg = verb.strip(), arg.strip()
    if verb == "GARBAGE":
        raw("this is not json")
        raw('{"no": "method or id"}')
        raw("[1, 2, 3]")
        event(request_id, thread_id, {"type": "agent_message", "message": "survived garbage"})
        answer(request_id, thread_id, "survived garbage")
    elif verb == "HANG":
        return
    elif verb == "LATE_ABORT":
        late[thread_id] = lambda: event(request_id, thread_id, {"type": "turn_aborted",
                                                                "turn_id": f"turn-{request_id}",
                                                                "reason": "interrupted"})
        return
    elif verb == "CRASH":
        sys.stderr.write("fake codex: crashing on purpose\n")
        sys.stderr.flush()
        os._exit(3)
    elif verb == "FLOOD":
        # Written in large chunks, each line built once, so the fake's own cost stays far below
        # the server's and a benchmark of the flood measures the server.
        head, tail = json.dumps({"jsonrpc": "2.0", "method": "codex/event",
                                 "params": {"_meta": {"requestId": request_id, "threadId": thread_id},
                                            "id": f"turn-{request_id}",
                                            "msg": {"type": "agent_message_delta", "delta": "@"}}}).split("@")
        lines = [f"{head}{i}{tail}" for i in range(int(arg))]
        for start in range(0, len(lines), 512):
            raw("\n".join(lines[start:start + 512]))
        event(request_id, thread_id, {"type": "agent_message", "message": "flooded"})
        answer(request_id, thread_id, "flooded")
    elif verb == "SLEEP":
        time.sleep(float(arg.split()[0]))
        event(request_id, thread_id, {"type": "agent_message", "message": "slept"})
        answer(request_id, thread_id, "slept")
    elif verb == "TIME_AFTER":
        time.sleep(float(arg))
        answer(request_id, thread_id, NOW, send=send_stamped)
    elif verb == "ASK_UNKNOWN":
        reply = ask("codex/something_new", {"threadId": thread_id})
        answer(request_id, thread_id, "client said: " + json.dumps(reply))
    else:
        text = "fake: " + prompt
        event(request_id, thread_id, {"type": "agent_message", "message": text})
        answer(request_id, thread_id, text)


def app_note(thread_id, method, params):
    params["threadId"] = thread_id
    send({"method": method, "params": params})


hanging_turns = set()  # app-server turns whose interrupt is never answered


def app_turn(thread_id, turn_id, prompt):
    def note(method, params):
        app_note(thread_id, method, params)
    note("turn/started", {"turn": {"id": turn_id, "status": "inProgress", "items": []}})
    verb, _, arg = prompt.partition(":")
    if verb.strip() == "HANG":
        hanging_turns.add(turn_id)
        return
    if verb.strip() == "LATE_INTERRUPT":
        late[thread_id] = lambda: app_note(thread_id, "turn/completed",
                                           {"turn": {"id": turn_id, "status": "interrupted", "items": []}})
        return
    if verb.strip() == "TIME_AFTER":
        time.sleep(float(arg))
        item = {"type": "agentMessage", "id": "msg-" + turn_id, "text": NOW}
        ended = {"turn": {"id": turn_id, "status": "completed", "items": [item]}}
        send_stamped({"method": "item/completed", "params": {"threadId": thread_id, "turnId": turn_id, "item": item}},
                     {"method": "turn/completed", "params": dict(ended, threadId=thread_id)})
        return
    if verb.strip() == "ASK":
        reply = ask(arg.strip(), {"threadId": thread_id, "turnId": turn_id, "itemId": "item-asked",
                                  "command": "touch x", "cwd": "/", "reason": "fake asks",
                                  "permissions": {"network": {"enabled": True}}})
        text = "client said: " + json.dumps(reply)
    else:
        text = "fake app: " + prompt
    item = {"type": "agentMessage", "id": "msg-" + turn_id, "text": text}
    note("item/completed", {"turnId": turn_id, "item": item})
    note("turn/completed", {"turn": {"id": turn_id, "status": "completed", "items": [item]}})


def run_app_server():
    threads = [0]
    for line in sys.stdin:
        message = json.loads(line)
        method, request_id = message.get("method"), message.get("id")
        if method == "initialize":
            send({"id": request_id, "result": {"userAgent": "fake"}})
        elif method == "thread/start":
            threads[0] += 1
            send({"id": request_id, "result": {"thread": {"id": f"fake-app-thread-{os.getpid()}-{threads[0]}"}}})
        elif method == "thread/resume":
            send({"id": request_id, "result": {"thread": {"id": message["params"]["threadId"]}}})
        elif method == "turn/start":
            params = message["params"]
            turn_id = f"turn-{request_id}"
            prompt = params["input"][0]["text"]
            stale = late.pop(params["threadId"], None)
            if stale:
                stale()
            if prompt.strip() == "SLOW_START":
                sys.stderr.write("fake codex: turn/start SLOW_START received\n")
                sys.stderr.flush()
                threading.Timer(60, send, args=({"id": request_id, "result": {"turn": {"id": turn_id}}},)).start()
                continue
            send({"id": request_id, "result": {"turn": {"id": turn_id, "status": "inProgress"}}})
            threading.Thread(target=app_turn, args=(params["threadId"], turn_id, prompt),
                             daemon=True).start()
        elif method == "turn/interrupt":
            params = message["params"]
            if params["turnId"] in hanging_turns:
                continue
            send({"id": request_id, "result": {}})
            if params["threadId"] not in late:
                app_note(params["threadId"], "turn/completed",
                         {"turn": {"id": params["turnId"], "status": "interrupted", "items": []}})
        elif method is None and request_id in pending:
            slot = pending[request_id]
            slot[1] = message
            slot[0].set()
        elif method is not None and request_id is not None:
            send({"id": request_id, "error": {"code": -32601, "message": f"fake app-server: no {method}"}})


def run_exec(args):
    thread_id = args[args.index("resume") + 1] if "resume" in args else "fake-exec-thread"
    prompt = args[-1]
    if prompt == "IGNORE_TERM":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for line in [{"type": "thread.started", "thread_id": thread_id}, {"type": "turn.started"}]:
            print(json.dumps(line), flush=True)
        time.sleep(600)
        return
    for line in [
        {"type": "thread.started", "thread_id": thread_id},
        {"type": "turn.started"},
        {"type": "item.completed", "item": {"id": "item_0", "type": "agent_message", "text": "fake exec: " + prompt}},
        {"type": "turn.completed", "usage": {"input_tokens": 1, "output_tokens": 1}},
    ]:
        print(json.dumps(line), flush=True)


def main():
    args = sys.argv[1:]
    if args == ["--version"]:
        banner = os.environ.get("FAKE_CODEX_BANNER")
        print(banner if banner is not None else "codex-cli " + os.environ.get("FAKE_CODEX_VERSION", "0.153.4"))
        return
    pid_dir = os.environ.get("FAKE_CODEX_PID_DIR")
    restarted = False
    if pid_dir:
        restarted = bool(os.listdir(pid_dir))
        open(os.path.join(pid_dir, str(os.getpid())), "w").close()
    while args[:1] == ["-c"]:
        args = args[2:]
    if args[:1] == ["exec"]:
        return run_exec(args)
    if args == ["app-server"] and os.environ.get("FAKE_CODEX_APP_SERVER"):
        return run_app_server()
    if args != ["mcp-server"]:
        sys.stderr.write(f"fake codex: unsupported arguments {sys.argv[1:]}\n")
        sys.exit(2)
    for line in sys.stdin:
        message = json.loads(line)
        method = message.get("method")
        if method == "initialize":
            if restarted and os.environ.get("FAKE_CODEX_SLOW_RESTART"):
                sys.stderr.write("fake codex: a slow restart\n")
                sys.stderr.flush()
                time.sleep(60)
            gate = os.environ.get("FAKE_CODEX_GATE")
            while gate and not os.path.exists(gate):
                time.sleep(0.02)
            if os.environ.get("FAKE_CODEX_HANDSHAKE") == "exit":
                sys.stderr.write("fake codex: refusing the handshake\n")
                sys.exit(4)
            send({"jsonrpc": "2.0", "id": message["id"], "result": {
                "protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                "serverInfo": {"name": "codex-mcp-server", "version": "0.153.4"}}})
            if os.environ.get("FAKE_CODEX_STALL"):
                time.sleep(3600)
        elif method == "tools/call":
            stale = late.pop(message["params"]["arguments"].get("threadId"), None)
            if stale:
                stale()
            threading.Thread(target=run_turn, args=(message["id"], message["params"]["arguments"]),
                             daemon=True).start()
        elif method is None and message.get("id") in pending:
            slot = pending[message["id"]]
            slot[1] = message
            slot[0].set()


if __name__ == "__main__":
    main()
