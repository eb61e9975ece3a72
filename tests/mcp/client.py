"""A real MCP client (the official Python `mcp` package, not written by this project) driving
`wgagent mcp` over stdio: list tools, execute, run in the background, read output, signal.

Usage: client.py WGAGENT_BIN CONFIG [--agent NAME | --multi NAME] [SOCKET]
  --agent NAME  the server was started with --agent NAME: tools take no `agent` argument
  --multi NAME  several agents: every tool takes `agent`, NAME is the one to use
  SOCKET        run `wgagent mcp --socket SOCKET`: through a control daemon
Prints one line per check and a final "N passed, M failed"; exits non-zero on any failure.
"""

import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

passed = 0
failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name}: {detail}")


def payload(result):
    """The tool result's JSON (our tools return one text item holding a JSON object)."""
    text = result.content[0].text
    return json.loads(text)


async def main():
    binary, config, mode, agent = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    args = ["mcp", "--config", config]
    if len(sys.argv) > 5:
        args += ["--socket", sys.argv[5]]
    if mode == "--agent":
        args += ["--agent", agent]
    extra = {"agent": agent} if mode == "--multi" else {}
    params = StdioServerParameters(command=binary, args=args)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await asyncio.wait_for(session.initialize(), 30)
            tools = (await session.list_tools()).tools
            names = sorted(t.name for t in tools)
            check("lists the four tools", names == ["execute", "process_list", "process_output", "process_signal"], names)
            execute = next(t for t in tools if t.name == "execute")
            schema = execute.inputSchema if hasattr(execute, "inputSchema") else execute.input_schema
            props = schema.get("properties", {})
            check("execute schema describes every parameter",
                  all("description" in p for p in props.values()) and "command" in props, props)
            if mode == "--multi":
                check("agent argument lists the agents", agent in props.get("agent", {}).get("enum", []), props.get("agent"))
            else:
                check("no agent argument with --agent", "agent" not in props, props.keys())

            r = payload(await session.call_tool("execute", {"command": "echo hi-from-mcp", **extra}))
            check("execute echo", r.get("success") is True and r.get("output") == "hi-from-mcp\n" and r.get("exit_code") == 0, r)

            r = payload(await session.call_tool("execute", {"command": "exit 7", **extra}))
            check("execute failure exit code", r.get("success") is False and r.get("exit_code") == 7, r)

            r = payload(await session.call_tool("execute", {"command": "echo bg-start; sleep 300", "run_in_background": True, **extra}))
            pid = r.get("background_process_id")
            check("background run returns an id", r.get("success") is True and isinstance(pid, str) and len(pid) == 36, r)

            r = payload(await session.call_tool("process_output", {"process_id": pid, "wait": "1s", **extra}))
            check("process_output of a running process", "still running" in (r.get("note") or "") and "bg-start" in (r.get("output") or ""), r)

            r = payload(await session.call_tool("process_list", {**extra}))
            ids = [p["id"] for p in r.get("processes", [])]
            check("process_list shows it", pid in ids, r)

            r = payload(await session.call_tool("process_signal", {"process_id": pid, "signal": "kill", **extra}))
            check("process_signal kill", r.get("success") is True, r)

            r = payload(await session.call_tool("process_output", {"process_id": pid, "wait": "10s", **extra}))
            check("killed process has exited", r.get("note") is None or "still running" not in r.get("note", ""), r)

            bad = await session.call_tool("execute", {**extra})
            is_error = getattr(bad, "isError", None)
            if is_error is None:
                is_error = getattr(bad, "is_error", False)
            check("missing command is a tool error", is_error is True, bad)

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
