"""An MCP client built on the official Python SDK (`mcp` from PyPI), for the HTTP tests: a client
that is not our own code path.

    sdk_client.py URL http|sse SCENARIO [ARG...]        (env MCP_TOKEN: bearer token;
                                                        env MCP_READ_TIMEOUT: seconds)

Scenarios print one JSON document on stdout (with SDK_ELICITATION=1 the client declares the
elicitation capability and declines every form):
    call TOOL JSON_ARGS     the tool's structured content, or {"error": text} when isError
    lifecycle CWD           start, wait, events, reply, wait, a second job cancelled, list
    wait-forever JOB_ID     job_wait with a long timeout; meant to be killed mid-wait
    read-whole JOB_ID       the job's final message through job_result pages, its deltas through
                            job_events pages, and the largest structuredContent seen
    log LEVEL CWD PROMPT NEEDLE
                            logging/setLevel LEVEL (its result), then a job of PROMPT run to its
                            end, and the log messages the server sent up to the first that holds
                            NEEDLE (waited for up to 30 s)
"""

import asyncio
import json
import os
import sys

import httpx2
from mcp import ClientSession, types
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client


def connect(url, transport):
    headers = {}
    if os.environ.get("MCP_TOKEN"):
        headers["Authorization"] = "Bearer " + os.environ["MCP_TOKEN"]
    read_timeout = float(os.environ.get("MCP_READ_TIMEOUT", "300"))
    if transport == "sse":
        return sse_client(url, headers=headers, sse_read_timeout=read_timeout)
    client = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=read_timeout))
    return streamable_http_client(url, http_client=client)


async def call(session, tool, args):
    result = await session.call_tool(tool, args)
    if result.is_error:
        return {"error": " ".join(c.text for c in result.content if getattr(c, "text", None))}
    return result.structured_content


async def settle(session, job_id):
    while True:
        waited = await call(session, "job_wait", {"job_id": job_id, "timeout_seconds": 30})
        if waited["notifications"]:
            return waited["notifications"][-1]


async def lifecycle(session, cwd):
    out = {}
    started = await call(session, "job_start", {"prompt": "SAY: over http", "cwd": cwd})
    job = started["job_id"]
    out["started"] = started
    out["settled"] = await settle(session, job)
    out["events"] = await call(session, "job_events", {"job_id": job, "limit": 100})
    out["reply"] = await call(session, "job_reply", {"job_id": job, "prompt": "SAY: second over http"})
    out["replied"] = await settle(session, job)
    long_job = (await call(session, "job_start", {"prompt": "SLEEP: 60", "cwd": cwd}))["job_id"]
    out["cancelled"] = await call(session, "job_cancel", {"job_id": long_job})
    out["list"] = await call(session, "job_list", {})
    return out


async def read_whole(session, job_id):
    largest = 0
    text, offset = "", 0
    while True:
        page = await call(session, "job_result", {"job_id": job_id, "offset": offset})
        largest = max(largest, len(json.dumps(page, ensure_ascii=False, separators=(",", ":")).encode()))
        text += page["text"]
        if "next_offset" not in page:
            break
        offset = page["next_offset"]
    deltas, cursor = "", 0
    while True:
        page = await call(session, "job_events", {"job_id": job_id, "cursor": cursor, "limit": 1000,
                                                  "include_deltas": True})
        largest = max(largest, len(json.dumps(page, ensure_ascii=False, separators=(",", ":")).encode()))
        deltas += "".join(e["data"]["delta"] for e in page["events"] if e["type"] == "agent_message_delta")
        cursor = page["cursor"]
        if not page["has_more"]:
            break
    return {"text": text, "deltas": deltas, "largest": largest}


async def log(session, messages, level, cwd, prompt, needle):
    answer = await session.set_logging_level(level)
    out = {"set_level": answer.model_dump(exclude_none=True, by_alias=True)}
    started = await call(session, "job_start", {"prompt": prompt, "cwd": cwd})
    out["settled"] = await settle(session, started["job_id"])
    # Log messages come on a stream of their own: wait for the one the job must have caused.
    seen = lambda: [m.model_dump(mode="json", exclude_none=True) for m in messages]
    for _ in range(600):
        if any(needle in json.dumps(m) for m in seen()):
            break
        await asyncio.sleep(0.05)
    out["messages"] = seen()
    return out


async def decline_form(context, params):
    return types.ElicitResult(action="decline")


async def main():
    url, transport, scenario, *args = sys.argv[1:]
    async with connect(url, transport) as streams:
        read, write = streams[0], streams[1]
        # SDK_ELICITATION=1 declares the elicitation capability (and declines any form).
        asks = os.environ.get("SDK_ELICITATION") == "1"
        callback = decline_form if asks else None
        messages = []

        async def keep(params):
            messages.append(params)

        async with ClientSession(
            read, write, elicitation_callback=callback, logging_callback=keep
        ) as session:
            await session.initialize()
            if scenario == "call":
                result = await call(session, args[0], json.loads(args[1]))
            elif scenario == "lifecycle":
                result = await lifecycle(session, args[0])
            elif scenario == "log":
                result = await log(session, messages, *args)
            elif scenario == "read-whole":
                result = await read_whole(session, args[0])
            elif scenario == "wait-forever":
                print(json.dumps({"waiting": True}), flush=True)
                result = await call(session, "job_wait", {"job_id": args[0], "timeout_seconds": 300})
            else:
                raise SystemExit(f"unknown scenario {scenario}")
    print(json.dumps(result), flush=True)


asyncio.run(main())
