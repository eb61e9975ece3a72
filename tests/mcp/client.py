"""A real MCP client (the official Python `mcp` package, not written by this project) driving
`wgagent mcp` over stdio: list tools, execute, run in the background, read output, signal.

Usage: client.py WGAGENT_BIN CONFIG [--agent NAME | --multi NAME] WORKDIR [SOCKET]
  --agent NAME  the server was started with --agent NAME: tools take no `agent` argument
  --multi NAME  several agents: every tool takes `agent`, NAME is the one to use
  WORKDIR       an empty directory on the agent for the file tools (write, read, edit, list)
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


async def file_tools(session, extra, workdir):
    path = workdir + "/src/main.go"
    source = "package main\n\tfunc main() {\n\tprintln(\"hello\")\n}\n\n// if __name__ == '__main__':\n"
    r = payload(await session.call_tool("write_file", {"path": path, "content": source, **extra}))
    check("write_file creates a file", r.get("success") is True and r.get("bytes") == len(source) and len(r.get("hash", "")) == 64, r)

    r = payload(await session.call_tool("list_directory", {"path": workdir + "/src", **extra}))
    check("list_directory shows it", [e["name"] for e in r.get("entries", [])] == ["main.go"] and r["entries"][0]["type"] == "file", r)

    r = payload(await session.call_tool("read_file", {"path": path, "offset": 2, "limit": 1, **extra}))
    check("read_file pages numbered lines", r.get("content") == "2\t\tfunc main() {" and r.get("total_lines") == 6 and r.get("next_offset") == 3, r)
    hash_before = r.get("hash")

    # A model's edit with 4-space indentation into a tab-indented file: the file keeps its style.
    edit = {"path": path, "if_match": hash_before, "edits": [{"search": "    println(\"hello\")", "replace": "    println(\"hello\")\n    println(\"bye\")"}]}
    r = payload(await session.call_tool("edit_files", {"files": [edit], **extra}))
    diff = (r.get("files") or [{}])[0].get("diff", "")
    check("edit_files applies and returns a diff", r.get("success") is True and "+\tprintln(\"bye\")" in diff, r)

    r = payload(await session.call_tool("read_file", {"path": path, **extra}))
    check("the edit kept the indentation", "4\t\tprintln(\"bye\")" in r.get("content", ""), r)

    # The same edit again with the old hash: refused, the file changed since.
    r = payload(await session.call_tool("edit_files", {"files": [edit], **extra}))
    check("a stale if_match is refused", r.get("success") is False and "changed since it was read" in r.get("error", ""), r)

    # A search that does not match: nothing written, and a hint the model can act on.
    bad = {"path": path, "edits": [{"search": "// if __name__ == '__main___':", "replace": "// if True:"}]}
    r = payload(await session.call_tool("edit_files", {"files": [bad], **extra}))
    err = r.get("error", "")
    check("a failed edit explains itself", r.get("success") is False and "search string not found" in err and "Your search has" in err, r)

    r = payload(await session.call_tool("execute", {"command": f"cat {path}", **extra}))
    check("execute's file-dump note names read_file", "read_file" in (r.get("note") or ""), r)


async def main():
    binary, config, mode, agent, workdir = sys.argv[1:6]
    args = ["mcp", "--config", config]
    if len(sys.argv) > 6:
        args += ["--socket", sys.argv[6]]
    if mode == "--agent":
        args += ["--agent", agent]
    extra = {"agent": agent} if mode == "--multi" else {}
    params = StdioServerParameters(command=binary, args=args)
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await asyncio.wait_for(session.initialize(), 30)
            tools = (await session.list_tools()).tools
            names = sorted(t.name for t in tools)
            check("lists the process and file tools", names == ["edit_files", "execute", "list_directory", "process_list", "process_output", "process_signal", "read_file", "write_file"], names)
            edit_tool = next(t for t in tools if t.name == "edit_files")
            edit_schema = edit_tool.inputSchema if hasattr(edit_tool, "inputSchema") else edit_tool.input_schema
            check("edit_files describes when to use it", "write_file" in edit_tool.description and "if_match" in edit_tool.description, edit_tool.description)
            check("edit_files schema nests files and edits", edit_schema["properties"]["files"]["items"]["properties"]["edits"]["items"]["required"] == ["search", "replace"], edit_schema)
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

            await file_tools(session, extra, workdir)

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
